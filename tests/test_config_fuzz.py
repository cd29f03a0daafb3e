"""Hypothesis fuzzing of the config loader: structured mutations of a valid config (any field replaced,
dropped or added, at any depth, by any YAML value) give a config or a ConfigError that names the problem,
never another exception."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import ConfigError, parse_config
from tests.helpers.procs import ROOT

VALID = yaml.safe_load((ROOT / "deploy" / "config" / "vtest-analytics.yaml").read_text())
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["decode", "infer", "tcp://*:5555", "@tcp://0.0.0.0:1", "ipc:///x", "../..", "a:b", "os:system", "-1", "1e999"]),
)
VALUES = st.recursive(LEAVES, lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=8), kids, max_size=3)), max_leaves=10)


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    def mutate(obj: Any) -> Any:
        if isinstance(obj, (dict, list)) and obj and draw(st.integers(0, 3)):
            keys = list(obj) if isinstance(obj, dict) else list(range(len(obj)))
            key = draw(st.sampled_from(keys))
            out = dict(obj) if isinstance(obj, dict) else list(obj)
            action = draw(st.sampled_from(["replace", "deeper", "deeper", "drop", "add"]))
            if action == "deeper":
                out[key] = mutate(obj[key])
            elif action == "drop":
                del out[key]
            elif action == "add" and isinstance(out, dict):
                out[draw(st.text(max_size=8))] = draw(VALUES)
            else:
                out[key] = draw(VALUES)
            return out
        return draw(VALUES)

    data = VALID
    for _ in range(draw(st.integers(1, 3))):
        data = mutate(data)
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_any_mutation_of_a_valid_config_loads_or_is_a_config_error(data: Any) -> None:
    try:
        parse_config(data)
    except ConfigError as exc:
        assert str(exc)  # names the problem
