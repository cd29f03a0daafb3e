"""The rule types are found by the registry: each public module of stages/analyze/rules/ is one rule type,
whose options the config's union accepts under the same `type` the rule class declares."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from stages.analyze import rules as rules_package
from stages.analyze.rules import RULES, RuleConfig, build_rule

# Each rule type with the keys it requires besides `name` and `type`.
REQUIRED: dict[str, dict[str, Any]] = {
    "anomaly": {},
    "fall": {},
    "light_change": {},
    "line_crossing": {"line": "gate"},
    "loitering": {"zone": "lawn"},
    "overcrowding": {"zone": "lawn", "max_count": 3},
    "red_light": {"line": "gate"},
    "sign_seen": {},
    "speed": {"limit": 10.0},
    "stopped_vehicle": {},
    "watchlist": {},
    "wrong_way": {"zone": "lawn", "direction": [1, 0]},
    "zone_intrusion": {"zone": "lawn"},
}
ADAPTER: TypeAdapter[Any] = TypeAdapter(RuleConfig)


def test_each_module_of_the_package_is_one_rule_type_named_after_it() -> None:
    folder = Path(rules_package.__file__ or "").parent
    modules = sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
    assert RULES.names() == modules == sorted(REQUIRED)
    for name, cls in RULES.all().items():
        assert cls.__module__ == f"stages.analyze.rules.{name}"


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_the_union_accepts_each_type_as_its_rule_declares_it(name: str) -> None:
    cls = RULES.get(name)
    assert cls.type == name
    assert typing.get_args(cls.Options.model_fields["type"].annotation) == (name,)
    opts = ADAPTER.validate_python({"name": "r1", "type": name, **REQUIRED[name]})
    assert type(opts) is cls.Options
    assert type(build_rule(opts)) is cls


def test_an_unknown_type_is_refused_naming_every_known_one() -> None:
    with pytest.raises(ValidationError) as err:
        ADAPTER.validate_python({"name": "r1", "type": "fence", "zone": "lawn"})
    assert all(repr(name) in str(err.value) for name in REQUIRED)
