"""One Adam step on the reconstruction MSE, eager or replayed from a CUDA graph.

At the IRMAE paper's settings (batch 32) a training step on a GPU is bound by kernel launches,
not arithmetic: one model alone kept an H200 1-3 % busy (``benchmarks/results/gpu/``). A CUDA
graph records the step's forward pass, backward pass and Adam update once and replays them
with one launch (PyTorch's "whole network capture", ``torch.cuda.graph``: the CUDA semantics
notes of the PyTorch documentation), so the step costs the device's work rather than the host's. The batch goes into a fixed input tensor first
(``static_x.copy_(x)``); batches of another shape (a last, shorter batch) take the eager step,
which updates the same parameters and Adam state.

Capturing needs a few warm-up steps (PyTorch's recipe, on a side stream), which would move the
parameters; :class:`GraphedStep` saves the model's and Adam's state first and copies it back
in place afterwards, so the training trajectory is the eager one's. Adam is created with
``capturable=True`` (its step counter on the device), as capture requires.

Status: opt-in (``FACTORFLOW_CUDA_GRAPHS=1``, or ``train_autoencoder(..., cuda_graph=True)``)
until a device run has checked it against the eager step (``tests/test_gpu.py``) and measured
it (``benchmarks/bench_irmae_step.py --device cuda``); CPUs have no graphs and refuse it.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EagerStep", "GraphedStep", "set_capturable", "use_cuda_graph"]

WARMUP_STEPS = 3  # PyTorch's capture recipe: a few eager steps on a side stream first


def use_cuda_graph(cuda_graph: bool | None, device: torch.device) -> bool:
    """Whether to replay the step from a CUDA graph: ``cuda_graph`` when given, else the
    environment's ``FACTORFLOW_CUDA_GRAPHS=1`` on a CUDA device (ignored elsewhere). A
    ``cuda_graph=True`` off CUDA is a ValueError."""
    if cuda_graph is None:
        return device.type == "cuda" and os.environ.get("FACTORFLOW_CUDA_GRAPHS") == "1"
    if cuda_graph and device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a CUDA device, the model is on {device}")
    return bool(cuda_graph)


class EagerStep:
    """``step(x)``: one Adam step on ``mse(model(x), x)``; returns the loss (detached, on the
    model's device: reading it would wait for the device, so the caller sums it there)."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer) -> None:
        self.model, self.opt = model, opt

    def __call__(self, x: Tensor) -> Tensor:
        loss = F.mse_loss(self.model(x), x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()


def _snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Copies of the parameters and of Adam's per-parameter state (empty before its first
    step)."""
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "state": {id(p): copy.deepcopy(opt.state[p]) for p in model.parameters() if p in opt.state},
    }


def _restore_in_place(model: nn.Module, opt: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Put back the :func:`_snapshot` values into the same tensors (a captured graph keeps
    their addresses): parameters, and each Adam state tensor; state that did not exist then
    (before Adam's first step) is zeroed, which is how Adam starts it."""
    with torch.no_grad():
        for p, v in zip(model.parameters(), saved["params"], strict=True):
            p.copy_(v)
        for p in model.parameters():
            old = saved["state"].get(id(p), {})
            for name, t in opt.state.get(p, {}).items():
                if isinstance(t, Tensor) and name in old:
                    t.copy_(old[name])
                elif isinstance(t, Tensor):
                    t.zero_()


class GraphedStep:
    """``step(x)``: as :class:`EagerStep`, replayed from a CUDA graph for batches of shape
    ``batch_shape`` (see the module doc); needs Adam with ``capturable=True``."""

    def __init__(
        self, model: nn.Module, opt: torch.optim.Optimizer, batch_shape: tuple[int, ...]
    ) -> None:
        dev = next(model.parameters()).device
        if dev.type != "cuda":
            raise ValueError(f"a CUDA graph needs a CUDA device, the model is on {dev}")
        if not all(g.get("capturable") for g in opt.param_groups):
            raise ValueError("a CUDA graph of the Adam step needs Adam(capturable=True)")
        self.eager = EagerStep(model, opt)
        self.static_x = torch.zeros(batch_shape, device=dev, dtype=next(model.parameters()).dtype)
        saved = _snapshot(model, opt)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self.eager(self.static_x)
        torch.cuda.current_stream().wait_stream(side)
        _restore_in_place(model, opt, saved)
        self.graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):  # recorded, not run
            self.static_loss = F.mse_loss(model(self.static_x), self.static_x)
            self.static_loss.backward()
            opt.step()

    def __call__(self, x: Tensor) -> Tensor:
        if x.shape != self.static_x.shape:
            return self.eager(x)
        self.static_x.copy_(x)
        self.graph.replay()
        return self.static_loss.detach().clone()  # the next replay overwrites it


def set_capturable(opt: torch.optim.Optimizer, capturable: bool) -> None:
    """Make Adam ``capturable`` or not after ``load_state_dict``, which restores the flag the
    checkpoint was saved with: each group whose flag differs gets ``capturable``, and its step
    counters move to the parameters' device (capturable) or the CPU (not); groups that agree are
    left untouched."""
    for group in opt.param_groups:
        if bool(group.get("capturable")) == capturable:
            continue
        group["capturable"] = capturable
        for p in group["params"]:
            state = opt.state.get(p, {})
            if isinstance(state.get("step"), Tensor):
                dev = p.device if capturable else torch.device("cpu")
                state["step"] = state["step"].to(dev)
