"""The tiny-problem fast path (factorflow.dynamics.tiny): the numpy kernel equals the torch
objective, and train(..., backend="numpy") gives the torch loop's result on every stop reason,
per run in a batch, in the recorded trajectory, and in the flow."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from factorflow.dynamics import GD, Adam, Flow, Schedule, Stop, tiny, train
from factorflow.factorizations.dmf import init_dmf
from factorflow.objectives import CPObjective, DMFObjective
from factorflow.problems.completion import Completion
from factorflow.problems.matrix import gaussian_sensing, razin_2x2, synthetic_completion


def _completion(loss="mse"):
    return DMFObjective(synthetic_completion((6, 5), 2, 18, seed=1), loss)


def _factors(scales, depth=3, shape=(6, 5), width=None):
    fs, _ = init_dmf(
        shape, depth, init="normal", init_scale=scales, seeds=list(range(len(scales))), width=width
    )
    return fs


@pytest.mark.parametrize("loss", ["mse", "half_sse"])
@pytest.mark.parametrize("kind", ["completion", "sensing"])
def test_numpy_kernel_equals_torch_objective(kind, loss):
    if kind == "completion":
        obj = _completion(loss)
    else:
        obj = DMFObjective(gaussian_sensing((6, 5), 2, 20, seed=2), loss)
    fs = _factors([0.7, 1.1, 0.4])
    L, G = obj.value_and_grad(fs)
    k = obj.numpy_kernel()
    Ln, Gn = k([f.numpy() for f in fs])
    np.testing.assert_allclose(Ln, L.numpy(), rtol=1e-13, atol=0)
    np.testing.assert_allclose(k.value([f.numpy() for f in fs]), L.numpy(), rtol=1e-13, atol=0)
    for a, b in zip(Gn, G, strict=True):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-12, atol=1e-15)


def _same(ra, rb, rtol=1e-10, atol=1e-18):
    """Equal results; losses to rtol, or atol where a run has interpolated to the float floor."""
    assert ra.status == rb.status
    np.testing.assert_array_equal(ra.steps, rb.steps)
    np.testing.assert_allclose(ra.time, rb.time, rtol=1e-15)
    np.testing.assert_allclose(ra.final_loss, rb.final_loss, rtol=rtol, atol=atol)
    for a, b in zip(ra.params, rb.params, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=1e-14)
    ta, tb = ra.trajectory, rb.trajectory
    np.testing.assert_array_equal(ta.step, tb.step)
    np.testing.assert_array_equal(ta.time, tb.time)
    assert ta.values.keys() == tb.values.keys()
    for k in ta.values:
        np.testing.assert_allclose(ta.values[k], tb.values[k], rtol=rtol, atol=atol)
    assert ra.n_evals == rb.n_evals


STOPS = {
    "converged": Stop(loss_below=1e-3, max_steps=5000),
    "max_steps": Stop(max_steps=777),
    "max_time": Stop(max_time=2.345),
    "converged-in-batch-then-max_steps": Stop(loss_below=5e-2, max_steps=3000),
}


@pytest.mark.parametrize("name", list(STOPS))
def test_numpy_loop_equals_torch_loop(name):
    obj = _completion()
    fs = _factors([0.5, 0.9, 1.3])
    runs = {
        b: train(fs, obj, GD(0.05), STOPS[name], Schedule(per_decade=7), backend=b)
        for b in ("torch", "numpy")
    }
    _same(runs["torch"], runs["numpy"])
    if name.startswith("converged-in-batch"):  # the batch ends with runs in different states
        assert len(set(runs["numpy"].steps.tolist())) > 1


def test_numpy_loop_divergence_equals_torch_loop():
    obj = _completion()
    fs = _factors([0.3, 3.0])  # run 1 blows up at this lr, run 0 does not
    stop = Stop(max_steps=400, diverge_above=1e6)
    ra, rb = (
        train(fs, obj, GD(0.3), stop, Schedule(every=50), backend=b) for b in ("torch", "numpy")
    )
    assert "diverged" in ra.status
    _same(ra, rb)


def test_numpy_loop_probes_and_every_schedule():
    obj = _completion()
    fs = _factors([0.8])
    probes = {"w00": lambda ps: ps[-1][:, 0, 0] * ps[0][:, 0, 0]}
    ra, rb = (
        train(fs, obj, GD(0.05), Stop(max_steps=300), Schedule(every=37), probes, backend=b)
        for b in ("torch", "numpy")
    )
    _same(ra, rb)  # "w00" compared with the loss
    assert "w00" in rb.trajectory.values


def test_auto_takes_the_fast_path_only_on_tiny_problems(monkeypatch):
    calls = []
    real = tiny.quiet_steps
    monkeypatch.setattr(tiny, "quiet_steps", lambda *a: calls.append(1) or real(*a))
    obj = DMFObjective(razin_2x2(), "half_sse")
    f0, _ = init_dmf((2, 2), 3, init="normal", init_scale=0.1, seeds=[0], width=2)
    train(f0, obj, GD(1e-2), Stop(max_steps=50))
    assert calls
    calls.clear()
    big = DMFObjective(synthetic_completion((50, 50), 2, 300, seed=0), "mse")
    fb, _ = init_dmf((50, 50), 2, init="normal", init_scale=0.1, seeds=[0])
    assert sum(f.numel() for f in fb) > tiny.TINY_MAX_NUMEL
    train(fb, big, GD(1e-2), Stop(max_steps=5))
    assert not calls


def test_backend_numpy_says_why_it_does_not_apply():
    obj = _completion()
    fs = _factors([0.5])
    with pytest.raises(ValueError, match="only GD"):
        train(fs, obj, Adam(1e-2), Stop(max_steps=3), backend="numpy")
    cp_obj = CPObjective(
        Completion((3, 3, 3), torch.tensor([[0, 1, 2]]), torch.tensor([1.0], dtype=torch.float64)),
        "mse",
    )
    cp = [torch.full((1, 3, 2), 0.1, dtype=torch.float64) for _ in range(3)]
    with pytest.raises(ValueError, match="no numpy_kernel"):
        train(cp, cp_obj, GD(1e-2), Stop(max_steps=3), backend="numpy")
    with pytest.raises(ValueError, match="float64"):
        train(
            [f.float() for f in fs],
            DMFObjective(synthetic_completion((6, 5), 2, 18, seed=1, dtype=torch.float32), "mse"),
            Flow(),
            Stop(max_time=1.0),
            backend="numpy",
        )
    with pytest.raises(ValueError, match="backend must be"):
        train(fs, obj, GD(1e-2), Stop(max_steps=3), backend="jax")


def test_bfloat16_takes_the_torch_path():
    """numpy has no bfloat16: GD on bfloat16 parameters steps aside from the fast path (and
    backend="numpy" says why), and its losses and probes are recorded as float32."""
    bf = torch.bfloat16
    obj = DMFObjective(synthetic_completion((6, 5), 2, 18, seed=1).to(bf), "mse")
    fs = [f.to(bf) for f in _factors([0.5])]
    with pytest.raises(ValueError, match="no bfloat16"):
        train(fs, obj, GD(1e-2), Stop(max_steps=3), backend="numpy")
    res = train(fs, obj, GD(0.1), Stop(max_steps=20), probes={"w": lambda ps: ps[0][:, 0, 0]})
    assert res.status == ["max_steps"] and res.params[0].dtype == bf
    assert res.trajectory.values["w"].dtype == res.trajectory.values["loss"].dtype == np.float32
    assert res.final_loss[0] < float(obj(fs)[0])


@pytest.mark.parametrize(
    ("max_time", "dt"), [(0.3, 0.1), (2.345, 0.05), (1.0, 1 / 3), (7.0, 0.7), (1e-3, 1.0)]
)
def test_steps_until_matches_the_loops_time_test(max_time, dt):
    first = next(s for s in range(10**6) if s * dt >= max_time * (1 - 1e-12))
    assert tiny.steps_until(0, math.inf, None, max_time, dt) == min(first, tiny.CHUNK)
    assert tiny.steps_until(first, math.inf, None, max_time, dt) == 0


def test_flow_numpy_field_equals_torch_field():
    obj = DMFObjective(razin_2x2(), "half_sse")
    f0, _ = init_dmf((2, 2), 3, init="normal", init_scale=0.1, seeds=[0, 1], width=2)
    stop = Stop(loss_below=1e-3, max_time=1e4)
    ra, rb = (train(f0, obj, Flow(), stop, backend=b) for b in ("torch", "numpy"))
    assert ra.status == rb.status == ["converged", "converged"]
    np.testing.assert_allclose(ra.time, rb.time, rtol=1e-5)
    for a, b in zip(ra.params, rb.params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
