"""The IRMAE training step (factorflow.autoencoder.step): the loop with the step equals a plain
Adam loop to the last bit on the CPU; the CUDA-graph switch and its refusals; the warm-up's
state put back in place. The graph itself needs a device: tests/test_gpu.py."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from factorflow.autoencoder import IRMAE, train_autoencoder
from factorflow.autoencoder.step import (
    GraphedStep,
    _restore_in_place,
    _snapshot,
    set_capturable,
    use_cuda_graph,
)
from factorflow.data.shapes import make_shapes

F64 = torch.float64


@pytest.fixture(scope="module")
def images():
    return torch.from_numpy(make_shapes(60, seed=0)[0]).to(F64)


def test_training_equals_a_plain_adam_loop(images):
    """Per-epoch losses and final parameters equal, bit for bit, a loop written out here: the
    same shuffles, Adam and loss, the loss read after every step and summed in Python."""
    model = IRMAE(8, 2, channels=3, arch="shapes", seed=0).to(F64)
    ref = copy.deepcopy(model)
    hist = train_autoencoder(model, images, epochs=2, batch_size=16, lr=1e-3, seed=5)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(5)
    losses = []
    for _ in range(2):
        perm, total, batches = torch.randperm(60, generator=g), 0.0, 0
        for i in range(0, 60, 16):  # the last batch is shorter (12 images)
            x = images[perm[i : i + 16]]
            loss = F.mse_loss(ref(x), x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, batches = total + float(loss.detach()), batches + 1
        losses.append(total / batches)
    assert [r["train_loss"] for r in hist["epochs"]] == losses
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_cuda_graph_switch(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv("FACTORFLOW_CUDA_GRAPHS", raising=False)
    assert not use_cuda_graph(None, cuda) and not use_cuda_graph(None, cpu)
    monkeypatch.setenv("FACTORFLOW_CUDA_GRAPHS", "1")
    assert use_cuda_graph(None, cuda) and not use_cuda_graph(None, cpu)  # CPUs: no graphs
    assert not use_cuda_graph(False, cuda) and use_cuda_graph(True, cuda)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        use_cuda_graph(True, cpu)


def test_a_graph_is_refused_on_the_cpu_and_without_capturable_adam(images):
    model = IRMAE(8, 1, channels=3, arch="shapes", seed=0)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        train_autoencoder(model, images.float(), epochs=1, cuda_graph=True)
    with pytest.raises(ValueError, match="CUDA device"):
        GraphedStep(model, torch.optim.Adam(model.parameters()), (4, 3, 32, 32))


@pytest.mark.parametrize("started", [False, True])
def test_warm_up_steps_are_undone_in_place(images, started):
    """After a snapshot, steps that move the parameters and Adam's state (and create it, when
    Adam had not stepped) are undone into the same tensors; state Adam had not yet is zeroed,
    as Adam starts it."""
    model = IRMAE(8, 1, channels=3, arch="shapes", seed=0).to(F64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def step():
        loss = F.mse_loss(model(images[:8]), images[:8])
        opt.zero_grad()
        loss.backward()
        opt.step()

    if started:
        step()
    saved = _snapshot(model, opt)
    params = [p.detach().clone() for p in model.parameters()]
    step(), step()
    tensors = [(p, dict(opt.state[p])) for p in model.parameters()]
    _restore_in_place(model, opt, saved)
    for (p, state), before in zip(tensors, params, strict=True):
        assert torch.equal(p, before)
        for name, t in state.items():
            assert opt.state[p][name] is t  # the same tensor, its values put back
            want = saved["state"][id(p)][name] if started else torch.zeros_like(t)
            assert torch.equal(t, want)


def test_set_capturable_switches_a_loaded_adam(images):
    model = IRMAE(8, 1, channels=3, arch="shapes", seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    F.mse_loss(model(images[:4].float()), images[:4].float()).backward()
    opt.step()
    steps = {id(p): opt.state[p]["step"] for p in model.parameters()}
    set_capturable(opt, False)  # already so: untouched
    assert all(opt.state[p]["step"] is steps[id(p)] for p in model.parameters())
    set_capturable(opt, True)
    assert all(g["capturable"] for g in opt.param_groups)
    set_capturable(opt, False)
    assert not any(g["capturable"] for g in opt.param_groups)
    for p in model.parameters():
        assert opt.state[p]["step"].device.type == "cpu"
        assert float(opt.state[p]["step"]) == 1.0


def test_the_step_benchmark_runs_on_the_cpu(tmp_path, monkeypatch):
    """``benchmarks/bench_irmae_step.py`` (the GPU measurement of the CUDA graph) end to end on
    the CPU, tiny: the two CPU ways for each data set, its JSON written."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_irmae_step

    out = tmp_path / "b.json"
    argv = ["x", "--steps", "1", "--warmup", "1", "--rounds", "1", "--ls", "8", "--pool", "40"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out)])
    threads = torch.get_num_threads()
    try:
        bench_irmae_step.main()
    finally:
        torch.set_num_threads(threads)  # main() sets one thread, as the experiment's workers
    rows = json.loads(out.read_text())["rows"]
    assert [(r["dataset"], r["l"]) for r in rows] == [("shapes", 8), ("fashion-mnist", 8)]
    assert all(r["sync_ms"] > 0 and r["eager_ms"] > 0 and "graph_ms" not in r for r in rows)
