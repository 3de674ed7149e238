"""On a CUDA device (``pytest -m gpu``; skipped without one, and left out of the default run):
every registered experiment runs with ``device="cuda"`` at smoke scale, and the engine's
batched training on the device equals the CPU's in float64. ``benchmarks/gpu.sh`` runs these
and the paper-scale GPU benchmarks in one go."""

from __future__ import annotations

import os

import pytest
import torch

from factorflow.dynamics import GD, Flow, GroupRMSProp, Stop, train
from factorflow.experiments import EXPERIMENTS
from factorflow.factorizations.cp import init_cp
from factorflow.factorizations.dmf import init_dmf
from factorflow.objectives import CPObjective, DMFObjective
from factorflow.problems.matrix import synthetic_completion
from factorflow.problems.tensor import low_rank_tensor, tensor_completion
from factorflow.runner import run_experiment

#: The device under test; ``FACTORFLOW_TEST_DEVICE=cpu pytest -m gpu tests/test_gpu.py`` runs
#: the same checks on the CPU (a check of the tests themselves on a machine without a GPU).
DEV = os.environ.get("FACTORFLOW_TEST_DEVICE", "cuda")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEV.startswith("cuda") and not torch.cuda.is_available(), reason="needs a CUDA device"
    ),
]


@pytest.mark.parametrize("exp_id", sorted(EXPERIMENTS))
def test_every_experiment_runs_on_the_device(exp_id, tmp_path):
    summary = run_experiment(exp_id, tmp_path / "r", scale="smoke", device=DEV, log=print)
    assert summary["config"]["device"].startswith(DEV)
    assert summary["rows"]
    for c in summary["claims"]:
        assert c.get("measured") is not None or c.get("reason"), c


def _close(a, b, rtol):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.cpu(), y.cpu(), rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("opt", [GD(0.05), GroupRMSProp(1e-2), Flow(method="RK45")])
def test_dmf_batched_training_on_the_device_equals_cpu(opt):
    obj = DMFObjective(synthetic_completion((30, 20), 2, 250, seed=0), "mse")
    fs, _ = init_dmf((30, 20), 3, init="normal", init_scale=[0.3, 0.1, 0.05], seeds=[0, 1, 2])
    stop = Stop(max_steps=300) if not isinstance(opt, Flow) else Stop(max_time=20.0)
    cpu = train(fs, obj, opt, stop)
    gpu_obj = DMFObjective(obj.problem.to(torch.float64, DEV), "mse")
    dev = train([f.to(DEV) for f in fs], gpu_obj, opt, stop, backend="torch")
    assert dev.params[0].device.type == torch.device(DEV).type
    assert dev.status == cpu.status
    _close(dev.params, cpu.params, rtol=1e-8)


def test_cp_training_on_the_device_equals_cpu():
    g = torch.Generator().manual_seed(0)
    W, _ = low_rank_tensor((6, 6, 6), 2, generator=g, dtype=torch.float64)
    obs = tensor_completion(W, 80, g)
    init = init_cp((6, 6, 6), 10, 0.1, generator=torch.Generator().manual_seed(1))
    stop = Stop(max_steps=200)
    cpu = train(init, CPObjective(obs, "mse"), GD(0.05), stop)
    dev = train(
        [f.to(DEV) for f in init], CPObjective(obs.to(torch.float64, DEV), "mse"), GD(0.05), stop
    )
    _close(dev.params, cpu.params, rtol=1e-8)


@pytest.mark.skipif(not DEV.startswith("cuda"), reason="CUDA graphs need a CUDA device")
def test_irmae_training_from_a_cuda_graph_equals_the_eager_step(tmp_path):
    """The IRMAE step replayed from a CUDA graph (factorflow.autoencoder.step) trains as the
    eager step does: 70 images in batches of 32 (the last, of 6, takes the eager step), float32,
    so equal to rounding (capturable Adam computes its bias correction on the device); and a
    graphed run resumed from its checkpoint (graph captured after the load) equals one
    without the interruption."""
    from factorflow.autoencoder import IRMAE, train_autoencoder

    x = torch.rand(70, 1, 32, 32, generator=torch.Generator().manual_seed(0))

    def run(graphed, epochs=3, checkpoint=None):
        m = IRMAE(16, 4, channels=1, arch="mnist", seed=0)
        h = train_autoencoder(
            m, x, epochs=epochs, batch_size=32, lr=1e-3, seed=0, device=DEV,
            cuda_graph=graphed, checkpoint=checkpoint,
        )  # fmt: skip
        return [r["train_loss"] for r in h["epochs"]], list(m.parameters())

    eager_loss, eager_params = run(False)
    graph_loss, graph_params = run(True)
    assert graph_loss == pytest.approx(eager_loss, rel=1e-5)
    for a, b in zip(graph_params, eager_params, strict=True):
        torch.testing.assert_close(a.detach().cpu(), b.detach().cpu(), rtol=1e-4, atol=1e-6)
    run(True, epochs=2, checkpoint=tmp_path / "ckpt")
    resumed_loss, resumed_params = run(True, epochs=3, checkpoint=tmp_path / "ckpt")
    assert resumed_loss == pytest.approx(graph_loss, rel=1e-6)
    for a, b in zip(resumed_params, graph_params, strict=True):
        torch.testing.assert_close(a.detach().cpu(), b.detach().cpu(), rtol=1e-5, atol=1e-7)
