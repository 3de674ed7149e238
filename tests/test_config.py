"""Tests for the strict run configuration (factorflow.config): TOML round trip, ``--set``
parsing, and clear errors for unknown keys, missing or unknown losses and wrong types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factorflow.config import (
    ModelConfig,
    OptimizerConfig,
    ProblemConfig,
    RunConfig,
    StopConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    set_by_path,
)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def _to_toml(data: dict) -> str:
    """A tiny TOML writer for config dicts (scalars and lists at the top, one level of tables)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.toml"
    p.write_text(text)
    return p


CUSTOM = RunConfig(
    loss="half_sse",
    problem=ProblemConfig(kind="sensing", shape=(12, 7), rank=2, n_obs=80, seed=3, eps=0.5),
    model=ModelConfig(depth=4, width=9, init="normal", init_scale=2.5e-3, balance=True),
    optimizer=OptimizerConfig(name="group_rmsprop", lr=3e-4, beta=0.95, eps=1e-6),
    stop=StopConfig(loss_below=1e-7, max_steps=12345, max_time=1e4, max_wall_s=60.0),
    seeds=(4, 0, 9),
    dtype="float32",
)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("cfg", [RunConfig(loss="mse"), CUSTOM], ids=["defaults", "custom"])
def test_dict_and_toml_round_trip(cfg, tmp_path):
    d = config_to_dict(cfg)
    assert isinstance(d["seeds"], list) and isinstance(d["problem"]["shape"], list)
    assert config_from_dict(d) == cfg
    assert json.loads(json.dumps(d)) == d  # plain JSON values
    assert load_config(_write(tmp_path, _to_toml(d))) == cfg


def test_toml_file_with_defaults(tmp_path):
    text = """
loss = "mse"
seeds = [0, 1, 2]

[problem]
shape = [20, 10]
rank = 3

[model]
depth = 2
init_scale = 1e-2

[optimizer]
name = "gd"
lr = 0.5
"""
    cfg = load_config(_write(tmp_path, text))
    assert cfg.seeds == (0, 1, 2) and cfg.problem.shape == (20, 10) and cfg.problem.rank == 3
    assert cfg.problem.n_obs == ProblemConfig().n_obs  # untouched fields keep their defaults
    assert cfg.model == ModelConfig(depth=2, init_scale=1e-2)
    assert cfg.optimizer == OptimizerConfig(name="gd", lr=0.5)
    assert cfg.stop == StopConfig()


# --------------------------------------------------------------------------- --set


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("3", 3),
        ("1e-3", 1e-3),
        ("-2.5", -2.5),
        ('"flow"', "flow"),
        ("flow", "flow"),  # bare strings fall back to the string
        ("[0, 1, 2]", [0, 1, 2]),
        ("[12, 12]", [12, 12]),
        ("true", True),
        ("false", False),
    ],
)
def test_set_by_path_parses_values(raw, value):
    d: dict = {}
    set_by_path(d, "model.x", raw)
    assert d == {"model": {"x": value}}
    assert type(d["model"]["x"]) is type(value)


def test_overrides_on_top_of_a_file(tmp_path):
    p = _write(tmp_path, 'loss = "mse"\n[model]\ndepth = 2\n')
    cfg = load_config(
        p,
        [
            "model.depth=4",
            "model.balance=true",
            "optimizer.name=gd",
            "optimizer.lr=1e-1",
            "seeds=[3, 5]",
            'loss="half_sse"',
            "problem.shape=[6, 4]",
            "problem.rank=2",
        ],
    )
    assert cfg.model.depth == 4 and cfg.model.balance is True
    assert cfg.optimizer.name == "gd" and cfg.optimizer.lr == 0.1
    assert cfg.seeds == (3, 5) and cfg.loss == "half_sse" and cfg.problem.shape == (6, 4)
    assert load_config(None, ['loss="mse"']) == RunConfig(loss="mse")


def test_set_errors():
    with pytest.raises(ValueError, match="expects key=value"):
        load_config(None, ['loss="mse"', "model.depth"])
    d = {"loss": "mse"}
    with pytest.raises(ValueError, match="'loss' is not a section"):
        set_by_path(d, "loss.x", "1")


# --------------------------------------------------------------------------- errors


def test_load_config_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_load_config_invalid_toml(tmp_path):
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(_write(tmp_path, "loss = \n[model\n"))


def test_unknown_key_with_suggestion():
    with pytest.raises(
        ValueError, match=r"unknown config key 'model.dpth' \(did you mean 'depth'\?\)"
    ):
        config_from_dict({"loss": "mse", "model": {"dpth": 3}})
    with pytest.raises(ValueError, match=r"'sedes' \(did you mean 'seeds'\?\)"):
        config_from_dict({"loss": "mse", "sedes": [0]})
    with pytest.raises(ValueError, match="unknown config key 'training'"):
        config_from_dict({"loss": "mse", "training": {}})


def test_missing_or_unknown_loss():
    with pytest.raises(ValueError, match="must name its loss"):
        config_from_dict({"model": {"depth": 2}})
    with pytest.raises(ValueError, match=r"unknown loss 'l2'; choose one of \['half_sse', 'mse'\]"):
        config_from_dict({"loss": "l2"})


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("model", "depth", "three", "must be an integer"),
        ("model", "depth", True, "must be an integer"),
        ("model", "depth", 2.5, "must be an integer"),
        ("model", "init_scale", "1e-3", "must be a number"),
        ("model", "init_scale", False, "must be a number"),
        ("model", "balance", 1, "must be true or false"),
        ("optimizer", "name", 3, "must be a string"),
        ("problem", "shape", 12, "must be a list"),
        ("stop", "max_steps", True, "must be an integer"),
    ],
)
def test_wrong_types(section, key, value, message):
    with pytest.raises(ValueError, match=f"'{section}.{key}' {message}"):
        config_from_dict({"loss": "mse", section: {key: value}})


def test_integral_floats_are_integers():
    cfg = config_from_dict({"loss": "mse", "model": {"depth": 3.0}})
    assert cfg.model.depth == 3 and type(cfg.model.depth) is int


@pytest.mark.parametrize(
    "data",
    [
        {"seeds": [True, False]},
        {"seeds": [1.5]},
        {"problem": {"shape": [12.5, 12]}},
        {"problem": {"shape": ["12", 12]}},
    ],
    ids=["bool-seeds", "float-seed", "float-shape", "string-shape"],
)
def test_wrong_element_types_in_lists(data):
    with pytest.raises(ValueError, match="integer"):
        config_from_dict({"loss": "mse", **data})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"model": 3}, "must be a table"),
        ({"model": {"depth": 0}}, "model.depth must be >= 1"),
        ({"model": {"init_scale": 0.0}}, "init_scale must be > 0"),
        ({"model": {"init_scale": -1e-3}}, "init_scale must be > 0"),
        ({"model": {"width": -1}}, "width must be >= 0"),
        ({"optimizer": {"name": "sgd"}}, "unknown optimizer 'sgd'"),
        ({"optimizer": {"name": "gd", "lr": 0.0}}, "lr must be > 0"),
        ({"problem": {"kind": "tensor"}}, "unknown problem kind"),
        ({"problem": {"shape": [3, 3, 3]}}, "two positive sizes|a list of 2"),
        ({"problem": {"n_obs": 0}}, "n_obs must be >= 1"),
        ({"seeds": []}, "at least one seed"),
        ({"seeds": [1, 1]}, "distinct"),
        ({"dtype": "float16"}, "float64 or float32"),
    ],
)
def test_invalid_values(data, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict({"loss": "mse", **data})
