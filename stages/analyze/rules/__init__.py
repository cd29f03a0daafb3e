"""The rule types of the analyze stage: one module each in this package, holding its options (whose `type`
the config names) and its Rule class, found by the plugin registry. Adding a rule type is one new file;
code that several rule types share lives in this package's private (`_`) modules, which the registry skips.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field

from pipeline.plugins import Registry
from stages.analyze.rule import Rule, RuleOptions

RULES: Registry[type[Rule]] = Registry("rule", Rule, "stages.analyze.rules", key="type")

if TYPE_CHECKING:
    RuleConfig = RuleOptions  # to a type checker, any rule's options; the union below exists at run time only
else:
    # The options of every rule type, told apart by `type` (errors name the rule type's fields).
    RuleConfig = Annotated[Union[tuple(cls.Options for cls in RULES.all().values())], Field(discriminator="type")]  # noqa: UP007


def build_rule(cfg: RuleOptions) -> Rule[Any]:
    """The rule for validated options (one member of `RuleConfig`)."""
    return RULES.get(cfg.type)(cfg)  # type: ignore[attr-defined]  # every member of RuleConfig has `type`
