"""Discrete optimizers, one short update rule each, batched over independent runs.

Parameters are a list of tensors with a leading batch dimension B (one run per index). Every
rule is per run: a run's update never depends on another run's gradient. Each optimizer is a
pair of pure functions ``init_state(params) -> state`` and
``update(params, grads, state, step) -> (new_params, new_state)`` (``step`` counts from 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["OPTIMIZERS", "Adam", "GD", "GroupRMSProp", "make_optimizer"]

Params = list[torch.Tensor]


def _check_lr(name: str, lr: float, **positive: float) -> None:
    """A ValueError naming the optimizer, the argument and the value unless ``lr`` (and each of
    ``positive``) is a finite number > 0 (a negative lr would run gradient ascent)."""
    for arg, v in {"lr": lr, **positive}.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name}: {arg} must be a finite number > 0, got {v!r}")


def _per_run(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a (B,) tensor against a (B, ...) parameter."""
    return x.reshape(x.shape[0], *([1] * (like.ndim - 1)))


@dataclass(frozen=True)
class GD:
    """Plain full-batch gradient descent: theta <- theta - lr * g."""

    lr: float
    name = "gd"

    def __post_init__(self) -> None:
        _check_lr("GD", self.lr)

    def init_state(self, params: Params) -> dict:
        return {}

    def update(self, params: Params, grads: Params, state: dict, step: int) -> tuple[Params, dict]:
        return [p - self.lr * g for p, g in zip(params, grads, strict=True)], state


@dataclass(frozen=True)
class GroupRMSProp:
    """The optimizer of Arora et al. 2019's code ("group RMSProp", read from the authors' public code): RMSProp
    with ONE scalar second moment per run for all its parameters (almost normalized GD).

        v_t = beta v_{t-1} + (1 - beta) sum_{all entries} g^2,   v_hat = v_t / (1 - beta^t)
        theta <- theta - lr g / (sqrt(v_hat) + eps)
    """

    lr: float
    beta: float = 0.99
    eps: float = 1e-4
    name = "group_rmsprop"

    def __post_init__(self) -> None:
        _check_lr("GroupRMSProp", self.lr, eps=self.eps)
        if not 0 <= self.beta < 1:
            raise ValueError(f"GroupRMSProp: beta must be in [0, 1), got {self.beta!r}")

    def init_state(self, params: Params) -> dict:
        return {
            "v": torch.zeros(params[0].shape[0], dtype=params[0].dtype, device=params[0].device)
        }

    def update(self, params: Params, grads: Params, state: dict, step: int) -> tuple[Params, dict]:
        sq = sum(g.square().flatten(1).sum(dim=1) for g in grads)
        v = self.beta * state["v"] + (1.0 - self.beta) * sq
        denom = (v / (1.0 - self.beta**step)).sqrt() + self.eps
        new = [p - self.lr * g / _per_run(denom, p) for p, g in zip(params, grads, strict=True)]
        return new, {"v": v}


@dataclass(frozen=True)
class Adam:
    """Adam (Kingma & Ba 2015) with bias correction, elementwise (so batching is free)."""

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    name = "adam"

    def __post_init__(self) -> None:
        _check_lr("Adam", self.lr, eps=self.eps)
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"Adam: betas must be in [0, 1), got {self.beta1!r}, {self.beta2!r}")

    def init_state(self, params: Params) -> dict:
        return {
            "m": [torch.zeros_like(p) for p in params],
            "v": [torch.zeros_like(p) for p in params],
        }

    def update(self, params: Params, grads: Params, state: dict, step: int) -> tuple[Params, dict]:
        m = [
            self.beta1 * mi + (1 - self.beta1) * g for mi, g in zip(state["m"], grads, strict=True)
        ]
        v = [
            self.beta2 * vi + (1 - self.beta2) * g * g
            for vi, g in zip(state["v"], grads, strict=True)
        ]
        c1, c2 = 1 - self.beta1**step, 1 - self.beta2**step
        new = [
            p - self.lr * (mi / c1) / ((vi / c2).sqrt() + self.eps)
            for p, mi, vi in zip(params, m, v, strict=True)
        ]
        return new, {"m": m, "v": v}


OPTIMIZERS = {"gd": GD, "group_rmsprop": GroupRMSProp, "adam": Adam}


def make_optimizer(name: str, **kwargs: float) -> GD | GroupRMSProp | Adam:
    """Build a discrete optimizer by name (``gd``, ``group_rmsprop``, ``adam``)."""
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {name!r}; choose one of {sorted([*OPTIMIZERS, 'flow'])}"
        ) from None
    if not kwargs.get("lr", 0) > 0:
        raise ValueError(f"learning rate must be > 0, got {kwargs.get('lr')}")
    return cls(**kwargs)
