"""Optimizers, gradient flow, stop rules and recording, batched over independent runs."""

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
    "GroupRMSProp",
    "LevelState",
    "LevelsRun",
    "Schedule",
    "Stop",
    "TrainResult",
    "Trajectory",
    "flow_levels_run",
    "gd_levels_batch",
    "gradient",
    "make_optimizer",
    "train",
    "train_patience",
]
