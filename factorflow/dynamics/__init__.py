"""Optimizers, gradient flow, stop rules and recording, batched over independent runs."""

from factorflow.dynamics.hybrid import (
    FlowThenGD,
    flow_then_gd,
    hessian_top_eigenvalue,
    train_past_crossing,
)
from factorflow.dynamics.levels import LevelsRun, LevelState, flow_levels_run, gd_levels_batch
from factorflow.dynamics.optimizers import GD, OPTIMIZERS, Adam, GroupRMSProp, make_optimizer
from factorflow.dynamics.patience import Patience, PatienceResult, train_patience
from factorflow.dynamics.record import Schedule, Stop, Trajectory
from factorflow.dynamics.train import FLOW_METHODS, Flow, TrainResult, gradient, train

__all__ = [
    "FLOW_METHODS",
    "GD",
    "OPTIMIZERS",
    "Patience",
    "PatienceResult",
    "Adam",
    "Flow",
    "FlowThenGD",
    "GroupRMSProp",
    "LevelState",
    "LevelsRun",
    "Schedule",
    "Stop",
    "TrainResult",
    "Trajectory",
    "flow_levels_run",
    "flow_then_gd",
    "gd_levels_batch",
    "gradient",
    "hessian_top_eigenvalue",
    "make_optimizer",
    "train",
    "train_past_crossing",
    "train_patience",
]
