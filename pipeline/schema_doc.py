"""The config reference in Markdown, made from the schema itself (`python -m pipeline.schema_doc [--write README.md]`).

The README embeds this output between markers, and a test keeps the two equal,
so the documented defaults and descriptions are the ones the code applies.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from pipeline.config import PipelineConfig, StageConfig, StreamConfig
from pipeline.registry import STAGE_KINDS

BEGIN = "<!-- config-reference:begin (python -m pipeline.schema_doc --write README.md) -->"
END = "<!-- config-reference:end -->"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(dict.fromkeys(_type_name(a) for a in args))
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (list, tuple, dict):
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "map"
    if tp is SecretStr:
        return "secret"  # a literal, ${NAME} or file:PATH (pipeline/secrets.py)
    return getattr(tp, "__name__", str(tp))


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(see below)"
        return f"`{json.dumps(value)}`"
    if field.default is PydanticUndefined:
        return "**required**"
    return f"`{json.dumps(field.default)}`"


def _models_in(tp: Any, path: str, choice: bool = False) -> list[tuple[str, type[BaseModel], bool]]:
    """Models nested in a field's type, with the key path a user writes (`a.`, `a.NAME.`, `a[].`) and whether
    the model is one choice of a union (a sink, a detector: its table is headed by its `type`)."""
    tp = _strip_annotated(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [(f"{path}.", tp, choice)]
    if origin in (typing.Union, types.UnionType):
        models = [a for a in args if _strip_annotated(a) is not type(None)]
        return [m for a in models for m in _models_in(a, path, choice or len(models) > 1)]
    if origin is list and args:
        return _models_in(args[0], f"{path}[]", choice)
    if origin is dict and len(args) == 2:
        return _models_in(args[1], f"{path}.NAME", choice)
    return []


def _strip_annotated(tp: Any) -> Any:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is typing.Annotated else tp


def _tag(model: type[BaseModel]) -> str | None:
    """The value of the model's `type: Literal[...]` field, the key a union tells its choices apart by."""
    field = model.model_fields.get("type")
    if field is not None and typing.get_origin(field.annotation) is typing.Literal:
        return str(typing.get_args(field.annotation)[0])
    return None


def model_table(model: type[BaseModel], prefix: str) -> list[str]:
    """One table for `model`, then one for each nested model (in fields, lists, maps and unions); the table of
    one choice of a union is headed by its `type`."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel], bool]] = []
    for name, field in model.model_fields.items():
        tp = field.annotation
        rows.append(f"| `{prefix}{name}` | {_type_name(tp)} | {_default(field)} | {field.description or ''} |")
        nested += _models_in(tp, f"{prefix}{name}")
    out = rows + [""]
    for pre, sub, sub_choice in nested:
        tag = _tag(sub)
        if sub_choice and tag is not None:
            out += [f"`{pre}` with `type: {tag}`:", ""]
        out += model_table(sub, pre)
    return out


def reference() -> str:
    lines: list[str] = ["### Top level", ""]
    lines += model_table(PipelineConfig, "")
    lines += ["### `streams[]`", ""] + model_table(StreamConfig, "")
    lines += ["### `stages[]`", ""] + model_table(StageConfig, "")
    for kind, cls in STAGE_KINDS.all().items():
        lines += [f"### `options` of kind `{kind}`", ""]
        if cls.Options.model_fields:
            lines += model_table(cls.Options, "")
        else:
            lines += ["(none)", ""]
    return "\n".join(lines).rstrip() + "\n"


def embed(text: str) -> str:
    """`text` (the README) with the reference between the markers replaced by the current one."""
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError("the config reference markers are missing")
    return f"{head}{BEGIN}\n{reference()}{END}{tail}"


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--write"]:
        path = sys.argv[2] if len(sys.argv) > 2 else "README.md"
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(embed(text))
    else:
        print(reference(), end="")
