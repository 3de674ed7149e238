"""Typed, frozen run configuration, loaded strictly from TOML or dicts (unknown keys are errors).

A config file has one table per section; every field has a documented default except the loss,
which must be named (``mse`` for Arora et al. 2019, ``half_sse`` for Razin & Cohen 2020)::

    loss = "mse"
    seeds = [0, 1, 2]            # one independent run per seed, trained as one batch

    [problem]
    kind = "synthetic"           # synthetic | sensing | razin2x2 | razin2x2_perturbed
    shape = [100, 100]
    rank = 5
    n_obs = 2000
    seed = 0                     # problem seed (ground truth and sampled entries)

    [model]
    depth = 3
    init = "gaussian"            # gaussian | normal | identity | orthogonal | balanced
    init_scale = 1e-3

    [optimizer]
    name = "flow"                # gd | group_rmsprop | adam | flow

    [stop]
    loss_below = 1e-6
    max_steps = 1000000

    [record]
    per_decade = 10
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factorflow.typed import _build, build_dataclass, config_to_dict, set_by_path, to_toml

__all__ = [
    "ModelConfig",
    "OptimizerConfig",
    "ProblemConfig",
    "RecordConfig",
    "RunConfig",
    "StopConfig",
    "build_dataclass",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "set_by_path",
    "to_toml",
]

PROBLEM_KINDS = ("synthetic", "sensing", "razin2x2", "razin2x2_perturbed")


@dataclass(frozen=True)
class ProblemConfig:
    """The observations. ``synthetic``/``sensing``: Arora et al. 2019's rank-``rank`` ground truth
    of ``shape`` with ``n_obs`` sampled entries / Gaussian measurements; ``razin2x2``: Razin &
    Cohen 2020's [[?, 1], [1, 0]]; ``razin2x2_perturbed``: observations (-2, 0.5, eps)."""

    kind: str = "synthetic"
    shape: tuple[int, int] = (100, 100)
    rank: int = 5
    n_obs: int = 2000
    seed: int = 0
    eps: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in PROBLEM_KINDS:
            raise ValueError(
                f"unknown problem kind {self.kind!r}; choose one of {list(PROBLEM_KINDS)}"
            )
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"problem.shape must be two positive sizes, got {self.shape}")
        if self.n_obs < 1:
            raise ValueError(f"problem.n_obs must be >= 1, got {self.n_obs}")
        if self.kind in ("synthetic", "sensing") and not 1 <= self.rank <= min(self.shape):
            raise ValueError(f"problem.rank must be in [1, {min(self.shape)}], got {self.rank}")


@dataclass(frozen=True)
class ModelConfig:
    """Deep matrix factorization (see :mod:`factorflow.factorizations.dmf` for what ``init_scale``
    means per init). ``width``: hidden width (0 = max(shape)). ``det_sign``: 0, +1 or -1."""

    depth: int = 3
    width: int = 0
    init: str = "gaussian"
    init_scale: float = 1e-3
    balance: bool = False
    det_sign: int = 0

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"model.depth must be >= 1, got {self.depth}")
        if not self.init_scale > 0:
            raise ValueError(f"model.init_scale must be > 0, got {self.init_scale}")
        if not math.isfinite(self.init_scale):
            raise ValueError(f"model.init_scale must be a finite number > 0, got {self.init_scale}")
        if self.width < 0:
            raise ValueError(f"model.width must be >= 0, got {self.width}")
        if self.det_sign not in (-1, 0, 1):
            raise ValueError(f"model.det_sign must be -1, 0 or 1, got {self.det_sign}")
        from factorflow.factorizations.dmf import DMF_INITS

        if self.init not in DMF_INITS:
            raise ValueError(f"unknown model.init {self.init!r}; choose one of {list(DMF_INITS)}")


@dataclass(frozen=True)
class OptimizerConfig:
    """``name``: gd | group_rmsprop | adam | flow. ``lr`` for the discrete ones; ``beta``/``eps``
    for group_rmsprop (Arora et al.'s 0.99 / 1e-4); ``method``/``rtol``/``atol`` for flow."""

    name: str = "flow"
    lr: float = 1e-2
    beta: float = 0.99
    eps: float = 1e-4
    method: str = "auto"
    rtol: float = 1e-7
    atol: float = 1e-10

    def __post_init__(self) -> None:
        from factorflow.dynamics.optimizers import OPTIMIZERS

        if self.name not in (*OPTIMIZERS, "flow"):
            raise ValueError(
                f"unknown optimizer {self.name!r}; choose one of {sorted([*OPTIMIZERS, 'flow'])}"
            )
        if self.name != "flow" and not self.lr > 0:
            raise ValueError(f"optimizer.lr must be > 0, got {self.lr}")
        from factorflow.dynamics.train import FLOW_METHODS

        if self.method != "auto" and self.method not in FLOW_METHODS:
            raise ValueError(
                f"unknown optimizer.method {self.method!r}; choose auto or one of {sorted(FLOW_METHODS)}"
            )
        if not (self.rtol > 0 and self.atol > 0 and self.eps > 0 and 0 <= self.beta < 1):
            raise ValueError("optimizer rtol, atol, eps must be > 0 and beta in [0, 1)")


@dataclass(frozen=True)
class StopConfig:
    """See :class:`factorflow.dynamics.Stop`; 0 means "no limit" for the optional fields."""

    loss_below: float = 1e-6
    max_steps: int = 1_000_000
    max_time: float = 0.0
    max_evals: int = 0
    max_wall_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("loss_below", "max_steps", "max_time", "max_evals", "max_wall_s"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"stop.{name} must be >= 0 (0 = no limit), got {getattr(self, name)}"
                )
        if not any(
            getattr(self, n)
            for n in ("loss_below", "max_steps", "max_time", "max_evals", "max_wall_s")
        ):
            raise ValueError("the stop rule needs at least one nonzero limit")


@dataclass(frozen=True)
class RecordConfig:
    """When to record (``every`` k steps/time units, ``per_decade`` log-spaced points from
    ``start``) and the top ``top_k`` singular values at each record."""

    every: float = 0.0
    per_decade: int = 10
    start: float = 1.0
    top_k: int = 10

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"record.top_k must be >= 1, got {self.top_k}")
        if self.per_decade < 0 or self.every < 0 or not self.start > 0:
            raise ValueError(
                f"record.per_decade and record.every must be >= 0 and record.start > 0, got "
                f"{self.per_decade}, {self.every}, {self.start}"
            )
        if not math.isfinite(self.every) or not math.isfinite(self.start):
            raise ValueError("record.every and record.start must be finite")


@dataclass(frozen=True)
class RunConfig:
    """One fit (or a batch of fits, one per seed) of a deep matrix factorization."""

    loss: str
    problem: ProblemConfig = field(default_factory=ProblemConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    seeds: tuple[int, ...] = (0,)
    dtype: str = "float64"
    device: str = "cpu"

    def __post_init__(self) -> None:
        from factorflow.losses import LOSSES

        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {sorted(LOSSES)}")
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {list(self.seeds)}")
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be float64 or float32, got {self.dtype!r}")


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Strictly build a :class:`RunConfig` (unknown keys and wrong types are ``ValueError``)."""
    if "loss" not in data:
        raise ValueError('the config must name its loss: loss = "mse" or "half_sse"')
    return _build(RunConfig, data, "")


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a TOML config file (or none, with ``path=None``), apply ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} does not exist")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{p}: not valid TOML: {e}") from None
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        set_by_path(data, k.strip(), v.strip())
    return config_from_dict(data)
