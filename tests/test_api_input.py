"""The Python API refuses bad training input with a ValueError or TypeError naming the argument
(part of issue 14's reliability checks; the command line's are in test_reliability.py)."""

from __future__ import annotations

import math

import pytest
import torch

import factorflow as ff


def test_api_rejects_bad_training_input():
    with pytest.raises(ValueError, match="init_scale must be a finite number > 0"):
        ff.init_dmf((3, 3), 2, init="normal", init_scale=math.inf, seeds=[0])
    for lr in (-1e-3, math.nan, math.inf, 0.0):
        with pytest.raises(ValueError, match="GD: lr must be a finite number > 0"):
            ff.GD(lr=lr)
    with pytest.raises(ValueError, match="GroupRMSProp: eps"):
        ff.GroupRMSProp(lr=1e-3, eps=-1.0)
    with pytest.raises(TypeError, match="values must be numbers"):
        ff.Completion((3, 3), torch.tensor([[0, 0]]), ["a"])
    with pytest.raises(ValueError, match="on one device; got cpu and meta"):
        ff.Completion((3, 3), torch.tensor([[0, 0]]), torch.ones(1, device="meta"))


def _dmf_problem():
    problem = ff.synthetic_completion((4, 5), 1, 10, 0)
    factors, _ = ff.init_dmf((4, 5), 2, init="normal", init_scale=0.1, seeds=[0, 1])
    return problem, factors, ff.DMFObjective(problem, "mse")


@pytest.mark.parametrize("optimizer", [ff.GD(lr=1e-2), ff.Flow()], ids=["gd", "flow"])
@pytest.mark.parametrize(
    "bad, error, message",
    [
        (lambda f: [], ValueError, "non-empty list"),
        (lambda f: [f[0]], ValueError, "end-to-end shape is \\(5, 5\\), the problem's \\(4, 5\\)"),
        (lambda f: [f[0], f[1][:, :, :3]], ValueError, "inner sizes must chain"),
        (lambda f: [x.float() for x in f], TypeError, "float32 but the problem is torch.float64"),
        (lambda f: [f[0], f[1][:1]], ValueError, "batch size"),
        (lambda f: [f[0], f[1] * math.inf], ValueError, "NaN or inf"),
        (lambda f: [f[0], f[1].long()], TypeError, "floating"),
    ],
    ids=["empty", "wrong-shape", "inner", "dtype", "batch", "inf", "int"],
)
def test_train_rejects_factors_that_do_not_fit(optimizer, bad, error, message):
    _, factors, objective = _dmf_problem()
    with pytest.raises(error, match=message):
        ff.train(bad(factors), objective, optimizer, ff.Stop(max_steps=5, max_evals=50))


def test_train_still_trains_good_factors():
    _, factors, objective = _dmf_problem()
    res = ff.train(factors, objective, ff.GD(lr=1e-2), ff.Stop(max_steps=5))
    assert res.status == ["max_steps", "max_steps"]
