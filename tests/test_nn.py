"""DeepLinear: the product of its factors, collapse, the DMF chain rule, inits, errors."""

import pytest
import torch
from torch import nn

from factorflow.factorizations.dmf import dmf_factor_gradients
from factorflow.nn import DEEP_LINEAR_INITS, DeepLinear

F64 = torch.float64


def _explicit_product(layer: DeepLinear) -> torch.Tensor:
    W = torch.eye(layer.in_features, dtype=layer.weights[0].dtype)
    for w in layer.weights:
        W = w @ W
    return W


@pytest.mark.parametrize("init", DEEP_LINEAR_INITS)
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_end_to_end_is_product_and_forward_matches(init, depth):
    torch.manual_seed(0)
    layer = DeepLinear(5, 3, depth, width=6, init=init, dtype=F64)
    W = layer.end_to_end()
    assert W.shape == (3, 5)
    torch.testing.assert_close(W, _explicit_product(layer))
    torch.testing.assert_close(layer.weight, W)
    x = torch.randn(7, 2, 5, dtype=F64)
    torch.testing.assert_close(layer(x), x @ W.T + layer.bias)


def test_widths_and_shapes():
    layer = DeepLinear(4, 2, 3, width=[5, 7], bias=False)
    assert [tuple(w.shape) for w in layer.weights] == [(5, 4), (7, 5), (2, 7)]
    assert layer.bias is None
    assert DeepLinear(4, 9, 3).dims == [4, 9, 9, 9]  # None -> max(in, out)


@pytest.mark.parametrize("bias", [True, False])
def test_collapse_same_outputs(bias):
    torch.manual_seed(1)
    layer = DeepLinear(6, 4, 3, bias=bias, dtype=F64)
    with torch.no_grad():
        if bias:
            layer.bias.normal_()
    lin = layer.collapse()
    assert isinstance(lin, nn.Linear) and lin.weight.dtype == F64
    x = torch.randn(10, 6, dtype=F64)
    torch.testing.assert_close(lin(x), layer(x))
    assert not lin.weight.requires_grad or lin.weight.grad_fn is None
    assert (lin.bias is None) == (not bias)


def test_depth_one_default_equals_nn_linear():
    torch.manual_seed(3)
    ref = nn.Linear(5, 3)
    torch.manual_seed(3)
    layer = DeepLinear(5, 3, 1)
    torch.testing.assert_close(layer.weights[0], ref.weight)
    torch.testing.assert_close(layer.bias, ref.bias)


def test_gradient_equals_dmf_chain_rule():
    """dL/dW_j = (W_N...W_{j+1})^T dL/dW (W_{j-1}...W_1)^T, with dL/dW = R^T X for
    L = 1/2 ||X W^T - Y||_F^2 (explicit formula, float64)."""
    torch.manual_seed(0)
    layer = DeepLinear(5, 4, 3, width=[6, 3], bias=False, init="gaussian", dtype=F64)
    X = torch.randn(11, 5, dtype=F64)
    Y = torch.randn(11, 4, dtype=F64)
    loss = 0.5 * ((layer(X) - Y) ** 2).sum()
    loss.backward()
    with torch.no_grad():
        R = X @ layer.end_to_end().T - Y
        grad_W = R.T @ X
        expected = dmf_factor_gradients([w[None] for w in layer.weights], grad_W[None])
    for w, g in zip(layer.weights, expected, strict=True):
        torch.testing.assert_close(w.grad, g[0], rtol=1e-12, atol=1e-12)


def test_dmf_inits_reproducible_and_scaled():
    a = DeepLinear(8, 8, 3, init="identity", init_scale=0.5, dtype=F64)
    torch.testing.assert_close(a.end_to_end(), 0.5 * torch.eye(8, dtype=F64))
    assert float(a.bias.detach().abs().max()) == 0.0
    b1 = DeepLinear(8, 6, 3, init="gaussian", init_scale=1e-2, seed=4, dtype=F64)
    b2 = DeepLinear(8, 6, 3, init="gaussian", init_scale=1e-2, seed=4, dtype=F64)
    torch.testing.assert_close(b1.end_to_end(), b2.end_to_end())
    c = DeepLinear(8, 6, 3, init="balanced", init_scale=2.0, seed=1, dtype=F64)
    assert abs(torch.linalg.matrix_norm(c.end_to_end()).item() - 2.0) < 1e-10
    assert c.balancedness_gap() < 1e-10
    torch.manual_seed(5)
    d1 = DeepLinear(8, 6, 2, init="orthogonal")
    torch.manual_seed(5)
    d2 = DeepLinear(8, 6, 2, init="orthogonal")
    torch.testing.assert_close(d1.end_to_end(), d2.end_to_end())


def test_metric_helpers():
    layer = DeepLinear(6, 6, 2, init="identity", init_scale=2.0, dtype=F64)
    torch.testing.assert_close(layer.singular_values(), torch.full((6,), 2.0, dtype=F64))
    assert layer.effective_rank() == pytest.approx(6.0)
    assert layer.numerical_rank() == 6
    with torch.no_grad():
        layer.weights[0][3:] = 0.0
    assert layer.effective_rank() == pytest.approx(3.0)
    assert layer.numerical_rank(1e-6) == 3
    assert layer.summary()["nuclear_norm"] == pytest.approx(6.0)


def test_float32_and_training_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), DeepLinear(8, 2, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randn(32, 2)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert model[2].end_to_end().dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 0}, "depth"),
        ({"depth": 2.0}, "depth"),
        ({"in_features": 0}, "in_features"),
        ({"width": 0}, "width"),
        ({"width": [3, 3]}, "hidden widths"),
        ({"width": [0]}, "hidden width"),
        ({"width": "4"}, "width"),
        ({"init": "xavier"}, "unknown init"),
        ({"init": "gaussian", "init_scale": 0.0}, "init_scale"),
        ({"init": "gaussian", "init_scale": -1.0}, "init_scale"),
        ({"init": "gaussian", "init_scale": float("nan")}, "init_scale"),
        ({"init_scale": 0.1}, "init='default'"),
        ({"init": "balanced", "width": 2}, "balanced"),
    ],
)
def test_errors(kwargs, match):
    args = {"in_features": 4, "out_features": 3, "depth": 2} | kwargs
    with pytest.raises(ValueError, match=match):
        DeepLinear(**args)


def test_compile_fullgraph_traces():
    """Dynamo traces the forward without graph breaks (aot_eager backend: no C++ build)."""
    torch.manual_seed(0)
    layer = DeepLinear(5, 3, 3, dtype=F64)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(4, 5, dtype=F64)
    torch.testing.assert_close(compiled(x), layer(x))
    compiled(x).sum().backward()
    assert all(w.grad is not None for w in layer.weights)


def test_compile_inductor_cpu():
    """Inductor on CPU (needs a C compiler; ~10 s here)."""
    torch.manual_seed(0)
    layer = DeepLinear(5, 3, 3)
    compiled = torch.compile(layer)
    x = torch.randn(4, 5)
    torch.testing.assert_close(compiled(x), layer(x))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_cuda(dtype):
    layer = DeepLinear(5, 3, 3, device="cuda", dtype=dtype, init="orthogonal")
    x = torch.randn(4, 5, device="cuda", dtype=dtype)
    assert layer(x).device.type == "cuda"
    torch.testing.assert_close(layer.collapse()(x), layer(x))
