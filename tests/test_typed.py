"""``factorflow.typed``: strict building of settings dataclasses from TOML-like data, the type
names in its messages, and the TOML writer's round trip."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from typing import Literal

import pytest

from factorflow.typed import build_dataclass, to_toml


@dataclasses.dataclass(frozen=True)
class Inner:
    rate: float = 0.1


@dataclasses.dataclass(frozen=True)
class Settings:
    mode: Literal["fast", "exact"] = "fast"
    pair: tuple[int, float] = (1, 2.0)
    sizes: tuple[int, ...] = ()
    limit: float | None = None
    inner: Inner = Inner()


def test_values_are_coerced_to_the_declared_types():
    s = build_dataclass(
        Settings,
        {"mode": "exact", "pair": [3, 4], "sizes": [1, 2.0], "limit": 5, "inner": {"rate": 1}},
    )
    assert s == Settings("exact", (3, 4.0), (1, 2), 5.0, Inner(1.0))
    assert isinstance(s.pair[1], float) and isinstance(s.sizes[1], int)
    assert build_dataclass(Settings, {"limit": None}).limit is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"mode": "slow"}, "'mode' must be one of 'fast', 'exact', got 'slow'"),
        ({"pair": [1]}, r"'pair' must be a list of 2 \(an integer, a number\), got \[1\]"),
        ({"pair": "1, 2"}, "'pair' must be a list of 2"),
        ({"pair": [1.5, 2]}, r"'pair\[0\]' must be an integer, got 1.5"),
        ({"sizes": [1, True]}, r"'sizes\[1\]' must be an integer, got True"),
        ({"limit": "big"}, "'limit' must be a number or none, got 'big'"),
        ({"inner": {"rat": 1}}, r"unknown config key 'inner.rat' \(did you mean 'rate'\?\)"),
        ({"moed": "fast"}, r"unknown config key 'moed' \(did you mean 'mode'\?\)"),
    ],
)
def test_a_wrong_value_is_an_error_naming_the_key_the_type_and_the_value(data, message):
    with pytest.raises(ValueError, match=message):
        build_dataclass(Settings, data)


def test_to_toml_round_trips_and_refuses_what_toml_cannot_hold():
    data = {"a": 1, "b": 2.5, "c": 'x"y', "d": [1, 2], "e": True, "t": {"u": [0.5], "v": "w"}}
    assert tomllib.loads(to_toml(data)) == data
    assert tomllib.loads(to_toml({"inf": math.inf}))["inf"] == math.inf
    with pytest.raises(ValueError, match="has no TOML form"):
        to_toml({"f": object()})
