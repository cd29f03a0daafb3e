"""Hypothesis fuzzing of the config loader: structured mutations of a valid config (any field replaced,
dropped or added, at any depth, by any YAML value) give a config or a ConfigError that names the problem,
never another exception."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import ConfigError, parse_config
from tests.helpers.mutations import mutate
from tests.helpers.procs import ROOT

VALID = yaml.safe_load((ROOT / "deploy" / "config" / "vtest-analytics.yaml").read_text())
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["decode", "infer", "tcp://*:5555", "@tcp://0.0.0.0:1", "ipc:///x", "../..", "a:b", "os:system", "-1", "1e999"]),
)
VALUES = st.recursive(LEAVES, lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=8), kids, max_size=3)), max_leaves=10)


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    data = VALID
    for _ in range(draw(st.integers(1, 3))):
        data = mutate(draw, data, VALUES)
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_any_mutation_of_a_valid_config_loads_or_is_a_config_error(data: Any) -> None:
    try:
        parse_config(data)
    except ConfigError as exc:
        assert str(exc)  # names the problem
