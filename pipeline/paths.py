"""How a config's relative paths are resolved: what a stage reads is found beside the config file, what a stage
writes goes where the pipeline runs.

- Inputs (file and folder sources, model weights, certificates, keys, watchlists, `file:` secrets): relative to
  the folder of the config file, so a config and the files it names move together and run from anywhere. The
  fields that hold them are typed `InputPath` (or are secrets); a `${NAME}`, a URL or a device is not a path.
- Outputs (the record stage's folder, the alert stage's outbox and files): relative to the working directory of
  `vidpipe run` / `vidpipe stage`; in a replay, under `--out` (each stage kind's `replay_options`).

Absolute paths are kept as written.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.functional_validators import BeforeValidator


class _Input:
    """Marks a config field whose value is a path the stage reads."""

    def __repr__(self) -> str:
        return "InputPath"


INPUT = _Input()
InputPath = Annotated[str, INPUT]


def _relative_path(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and not os.path.isabs(value) and "://" not in value and "${" not in value and not value.startswith("~")


def _resolved(value: str, base: Path) -> str:
    return os.path.normpath(base / value)


def _source_path(source: Any, base: Path) -> Any:
    """A stream's source with a relative file or folder path made absolute against `base` (URLs, devices and
    `${NAME}` references as they are)."""
    if isinstance(source, str) and _relative_path(source) and not source.isdigit():
        return _resolved(source, base)
    return source


def _is_secret(metadata: list[Any]) -> bool:
    from pipeline.secrets import resolve_secret

    return any(isinstance(m, BeforeValidator) and m.func is resolve_secret for m in metadata)


def resolve_inputs(model: Any, raw: Any, base: Path, metadata: tuple[Any, ...] = ()) -> Any:
    """`raw` (a config document's part, not validated yet) with every relative input path that `model` (the type
    it will be validated as) declares made absolute against `base`; anything the model does not know is left as it
    is, for validation to report."""
    meta = list(metadata)
    while get_origin(model) is Annotated:
        meta += list(model.__metadata__)
        model = get_args(model)[0]
    if INPUT in meta:
        return _resolved(raw, base) if _relative_path(raw) else raw
    if _is_secret(meta):
        if isinstance(raw, str) and raw.startswith("file:") and _relative_path(raw[5:]):
            return "file:" + _resolved(raw[5:], base)
        return raw
    origin = get_origin(model)
    if origin in (Union, UnionType):
        members = [m for m in get_args(model) if m is not type(None)]
        chosen = _member(members, raw)
        return raw if chosen is None else resolve_inputs(chosen, raw, base)
    if isinstance(model, type) and issubclass(model, BaseModel) and isinstance(raw, dict):
        out = dict(raw)
        for key, value in raw.items():
            field = next((f for name, f in model.model_fields.items() if key in (name, f.alias)), None)
            if field is not None:
                out[key] = resolve_inputs(field.annotation, value, base, tuple(field.metadata))
        return out
    if origin in (list, tuple, set, frozenset) and isinstance(raw, list):
        args = get_args(model)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return raw
        return [resolve_inputs(args[0] if args else Any, v, base) for v in raw]
    if origin is dict and isinstance(raw, dict) and len(get_args(model)) == 2:
        return {k: resolve_inputs(get_args(model)[1], v, base) for k, v in raw.items()}
    return raw


def _member(members: list[Any], raw: Any) -> Any:
    """The member of a union that `raw` will be validated as, where that can be told before validation: the one
    member that is not a plain value, or the model whose `type` literal `raw` names (its default when omitted)."""
    if len(members) == 1:
        return members[0]
    if not isinstance(raw, dict):
        plain = [m for m in members if get_origin(m) is Annotated or not (isinstance(m, type) and issubclass(m, BaseModel))]
        return plain[0] if len(plain) == 1 else None
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    tagged = []
    for m in models:
        field = m.model_fields.get("type")
        if field is not None and get_origin(field.annotation) is Literal:
            if raw.get("type", field.default) in get_args(field.annotation):
                tagged.append(m)
    if len(tagged) == 1:
        return tagged[0]
    return models[0] if len(models) == 1 else None


def resolve_config_inputs(data: dict[str, Any], base: Path, only_stage: str | None = None) -> dict[str, Any]:
    """A config document with its relative input paths made absolute against `base` (the config file's folder):
    stream sources, `transport.curve_keys` and each stage's input options. `only_stage`: only that stage's options
    (a stage process imports no other stage kind's modules)."""
    from pipeline.registry import resolve_stage  # here: the registry imports stage modules

    out = dict(data)
    streams = data.get("streams")
    if isinstance(streams, list):
        out["streams"] = [{**s, "source": _source_path(s["source"], base)} if isinstance(s, dict) and "source" in s else s for s in streams]
    transport = data.get("transport")
    if isinstance(transport, dict) and _relative_path(transport.get("curve_keys")):
        out["transport"] = {**transport, "curve_keys": _resolved(transport["curve_keys"], base)}
    stages = data.get("stages")
    if isinstance(stages, list):
        resolved = []
        for st in stages:
            if isinstance(st, dict) and isinstance(st.get("kind"), str) and isinstance(st.get("options"), dict):
                if only_stage is None or only_stage in (st.get("name"), st["kind"]):
                    try:
                        cls = resolve_stage(st["kind"])
                    except (ImportError, ValueError):
                        pass  # the config's check reports it
                    else:
                        st = {**st, "options": resolve_inputs(cls.Options, st["options"], base)}
            resolved.append(st)
        out["stages"] = resolved
    return out
