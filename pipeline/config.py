"""The deployment config: one YAML file, validated on load.

Every error names the field path (`stages[1].options.history`) and what is wrong,
and nothing starts while any error remains. Each stage kind validates its own
`options` with the pydantic model it declares.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from pipeline.curve import public_key_path
from pipeline.paths import resolve_config_inputs
from pipeline.plugins import nearest
from pipeline.secrets import expand_env, is_reference, redact_options, redact_url
from pipeline.transport import is_loopback, parse_endpoint

Mode = Literal["replay", "live"]
STAGE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")  # also a metric label and a key file's name


class ConfigError(ValueError):
    """One or more problems, each as (field path, message)."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        lines = [f"{source}: {len(problems)} problem{'s' if len(problems) != 1 else ''}"]
        lines += [f"  {path or '<top>'}: {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchConfig(Strict):
    max_size: int = Field(8, ge=1, le=1024, description="Most frames in one batch.")
    max_wait_ms: float = Field(10.0, ge=0, le=10_000, description="Longest a partial batch waits for more frames (live mode).")


class ReconnectConfig(Strict):
    initial_s: float = Field(0.5, gt=0, description="First wait before reopening a live source that failed.")
    max_s: float = Field(10.0, gt=0, description="Longest wait between reopen attempts (exponential backoff).")
    open_timeout_s: float = Field(5.0, gt=0, description="How long opening a network source may take.")
    read_timeout_s: float = Field(5.0, gt=0, description="How long a network read may stall before the source counts as down.")
    max_attempts: int | None = Field(
        None, ge=1, description="Give up (end the stream with an error) after this many failed opens in a row; null: never."
    )


class StreamConfig(Strict):
    id: str = Field(description="Stream name used in results, metrics and alerts.")
    source: str | int = Field(
        description="Video file, image folder, rtsp:// or http(s):// URL, or V4L2 device index (integer); `${NAME}` is replaced by the environment variable NAME in the source process only (a camera password); a URL's password is never logged or written."
    )
    fps: float | None = Field(None, gt=0, le=1000, description="Cap on frames per second taken from the source.")
    resize: tuple[int, int] | None = Field(None, description="Resize frames to [width, height].")
    loop: bool = Field(False, description="Start a file again at its end (a file standing in for a camera).")
    realtime: bool | None = Field(
        None, description="Pace file sources at their native rate; default: on in live mode, off in replay."
    )
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig, description="Reopening of live sources.")

    @property
    def live(self) -> bool:
        """A camera, URL or device: it numbers its frames from 0 again on every restart. Files do not restart."""
        return isinstance(self.source, int) or "://" in self.source

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", v):
            raise ValueError("must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
        return v

    @field_validator("resize")
    @classmethod
    def _resize(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not (16 <= v[0] <= 16384 and 16 <= v[1] <= 16384):
            raise ValueError("width and height must be between 16 and 16384")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str | int) -> str | int:
        if isinstance(v, int):
            if v < 0:
                raise ValueError("a device index must be 0 or more")
        elif not v.strip():
            raise ValueError("must not be empty")
        return v

    def resolved_source(self) -> str | int:
        """The source with `${NAME}` replaced from the environment (ValueError naming a variable that is not set).
        Only the source process resolves it, so no other stage needs, or sees, a camera's credentials."""
        return expand_env(self.source) if isinstance(self.source, str) else self.source


AUTO_PUBLISH = "auto"


def _connect_to(spec: str) -> str:
    """The connecting form of a binding endpoint (a wildcard host means this host)."""
    _, addr = parse_endpoint(spec, "pull")
    return ">" + addr.replace("tcp://*:", "tcp://127.0.0.1:").replace("tcp://0.0.0.0:", "tcp://127.0.0.1:")


class StageConfig(Strict):
    name: str = Field(description="Unique stage name; also the metric label `stage`.")
    kind: str = Field(description="Stage kind: a module of `stages` (decode, infer, track, record) or `module:Class`.")
    input: str | None = Field(None, description="Endpoint to receive from; default ipc in run_dir.")
    input_pattern: Literal["pull", "sub"] = Field("pull", description="pull on the main path, sub for an observer.")
    output: str | None = Field(None, description="Endpoint to send to; default the next stage's input.")
    publish: str | None = Field(
        None, description="Extra PUB endpoint mirroring the output, for observers that may lag; `auto`: an ipc:// socket in run_dir that observers find by themselves."
    )
    batch: BatchConfig = Field(default_factory=BatchConfig, description="How frames are grouped for process().")
    forward_pixels: bool = Field(True, description="Send pixels downstream (off when no later stage needs them).")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Port of /metrics and /healthz; default from metrics.port_base.")
    options: dict[str, Any] = Field(default_factory=dict, description="Kind-specific settings, checked by the kind.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not STAGE_NAME.fullmatch(v):
            raise ValueError("must be 1-32 lower-case letters, digits, '_' or '-', starting with a letter")
        return v

    @field_validator("input", "output", "publish")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and v != AUTO_PUBLISH:
            parse_endpoint(v, "pull")
        return v


class TransportConfig(Strict):
    hwm: int = Field(4, ge=1, le=100_000, description="ZeroMQ high-water mark (messages) on every socket.")
    run_dir: str | None = Field(None, description="Folder for ipc:// sockets (default: $XDG_RUNTIME_DIR/vidpipe-KEY, else /tmp/vidpipe-UID-KEY, KEY from the config). Created 0700; refused if it belongs to another user or others can enter it.")
    drain_timeout_s: float = Field(30.0, gt=0, description="How long a stopping stage may spend delivering what it holds.")
    max_message_mb: float = Field(
        128.0, gt=0, le=4096,
        description="Largest message a stage receives (MiB; an 8K BGR frame is 95): ZeroMQ drops the connection of a peer "
        "that sends a bigger one before it is read, so a forged size cannot make a stage allocate it.",
    )


    curve_keys: str | None = Field(
        None, description="Folder of the stages' CURVE keys (`vidpipe keys FOLDER STAGE...`): every tcp:// socket is then authenticated and "
        "encrypted, and a stage accepts only the stages the config wires to it. A stage's secret key may come from $VIDPIPE_CURVE_SECRET instead. Relative: to the config file's folder.",
    )
    allow_insecure_tcp: bool = Field(
        False, description="Let stages bind tcp:// on an address other hosts can reach without curve_keys: anyone who reaches the port "
        "can send frames, alerts and end-of-streams, and read a publish mirror. Only for a network closed by other means (a NetworkPolicy).",
    )


class LiveConfig(Strict):
    source_queue: int = Field(2, ge=1, le=1000, description="Frames a live source holds while downstream is full; older ones are shed.")
    max_frame_age_s: float = Field(2.0, gt=0, description="A stage sheds frames older than this on arrival (live mode).")
    send_timeout_ms: int = Field(1000, ge=0, description="A stage sheds a frame it could not hand on within this time (live mode).")


class MetricsConfig(Strict):
    host: str = Field("127.0.0.1", description="Address the /metrics servers listen on.")
    port_base: int | None = Field(
        9400, ge=1, le=65000, description="Launcher's port; each stage process takes the next one. null turns them off."
    )


class SupervisorConfig(Strict):
    restart_initial_s: float = Field(0.5, gt=0, description="First wait before restarting a crashed stage.")
    restart_max_s: float = Field(30.0, gt=0, description="Longest wait between restarts (exponential backoff).")
    stable_after_s: float = Field(30.0, gt=0, description="A stage up this long gets its backoff reset.")
    max_restarts: int | None = Field(
        None, ge=0, description="Stop the pipeline when one stage crashed this many times in a row; null: never (replay: 3)."
    )
    hang_after_s: float = Field(
        60.0, gt=0, description="A stage whose loop has not run for this long (hung, deadlocked, SIGSTOPped) is killed and restarted."
    )
    startup_s: float = Field(600.0, gt=0, description="The same for a stage that has not begun its loop since it started (loading its models).")


class PipelineConfig(Strict):
    version: Literal[1] = Field(1, description="Config format version.")
    mode: Mode = Field("replay", description="replay: lossless and deterministic; live: latency first, sheds frames.")
    streams: list[StreamConfig] = Field(min_length=1, description="Camera feeds and files.")
    stages: list[StageConfig] = Field(default_factory=list, description="Stages in data-flow order; the first is the source (decode).")
    transport: TransportConfig = Field(default_factory=TransportConfig, description="Sockets between stages.")
    live: LiveConfig = Field(default_factory=LiveConfig, description="Shedding rules of live mode.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Where /metrics and /healthz are served.")
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig, description="Restarts of crashed stages by `run`.")
    max_streams: int = Field(
        256, ge=1, le=100_000, description="Most streams a pipeline may have: every stage keeps state, files and metric series per stream, "
        "and takes no stream the config does not name, so this bounds what a stage can be made to hold.",
    )

    @model_validator(mode="after")
    def _check(self) -> "PipelineConfig":
        ids = [s.id for s in self.streams]
        if len(ids) > self.max_streams:
            raise ValueError(f"streams: {len(ids)} streams, more than max_streams ({self.max_streams}); raise max_streams, or split the cameras over pipelines")
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"streams: duplicate id {', '.join(dup)}")
        names = [s.name for s in self.stages]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"stages: duplicate name {', '.join(dup)}")
        self._check_tcp()
        return self

    def _check_tcp(self) -> None:
        """tcp:// reachable from other hosts needs CURVE keys (or the explicit allow_insecure_tcp)."""
        t = self.transport
        if t.curve_keys is not None:
            folder = Path(t.curve_keys).expanduser()
            if not folder.is_dir():
                raise ValueError(f"transport.curve_keys: {t.curve_keys} is not a folder (make the keys with: vidpipe keys {t.curve_keys} STAGE...)")
            missing = [st.name for st in self.stages if not public_key_path(folder, st.name).is_file()]
            if missing:
                raise ValueError(f"transport.curve_keys: no public key of {', '.join(missing)} in {t.curve_keys} "
                                 f"(make them with: vidpipe keys {t.curve_keys} {' '.join(missing)})")  # fmt: skip
            if sum(1 for st in self.stages if st.publish) > 1 and any(st.input_pattern == "sub" for st in self.stages):
                raise ValueError("transport.curve_keys: an observer must know which publisher it subscribes to; with CURVE only one stage may publish")
            return
        if t.allow_insecure_tcp:
            return
        for i, st in enumerate(self.stages):
            for key, spec, pattern in (("input", st.input, st.input_pattern), ("output", st.output, "push"), ("publish", st.publish, "pub")):
                if spec is None or (key == "publish" and spec == AUTO_PUBLISH):
                    continue
                bind, addr = parse_endpoint(spec, pattern)
                if bind and addr.startswith("tcp://") and not is_loopback(addr):
                    raise ValueError(
                        f"stages[{i}].{key}: {spec} binds where other hosts can reach it, and nothing would check who connects: "
                        "set transport.curve_keys (see `vidpipe keys`), bind 127.0.0.1, or set transport.allow_insecure_tcp: true"
                    )

    # -- derived wiring ---------------------------------------------------------------

    def stage(self, name: str) -> StageConfig:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage named {name!r}; stages: {', '.join(s.name for s in self.stages)}")

    def stage_index(self, name: str) -> int:
        return [s.name for s in self.stages].index(name)

    def input_endpoint(self, name: str) -> str | None:
        i = self.stage_index(name)
        st = self.stages[i]
        if st.input:
            return st.input
        if i == 0:
            return None
        if st.input_pattern == "sub":
            # An observer without an input subscribes to the one publisher before it.
            publishers = [s for s in self.stages[:i] if s.publish]
            if len(publishers) != 1:
                found = ", ".join(s.name for s in publishers) or "none"
                raise ValueError(f"stages[{i}] ({name}) observes without an `input`: exactly one stage before it must set `publish` (found: {found})")
            return _connect_to(self.publish_endpoint(publishers[0].name) or "")
        return f"ipc://{self.resolved_run_dir()}/{st.name}.sock"

    def publish_endpoint(self, name: str) -> str | None:
        """Where `name` publishes its mirror (`publish: auto`: an ipc socket in run_dir), if it does."""
        st = self.stage(name)
        if st.publish == AUTO_PUBLISH:
            return f"@ipc://{self.resolved_run_dir()}/{st.name}-publish.sock"
        return st.publish

    def output_endpoint(self, name: str) -> str | None:
        i = self.stage_index(name)
        st = self.stages[i]
        if st.output:
            return st.output
        nxt_name = self.downstream(name)
        if nxt_name is None:
            return None
        j = self.stage_index(nxt_name)
        nxt = self.stages[j]
        if nxt.input:
            # The downstream binds its own address; connect to it (a wildcard host means this host).
            bind, addr = parse_endpoint(nxt.input, nxt.input_pattern)
            if not bind:
                raise ValueError(f"stages[{j}].input connects; set stages[{i}].output to the address to bind")
            return _connect_to(nxt.input)
        return f">ipc://{self.resolved_run_dir()}/{nxt.name}.sock"

    def resolved_run_dir(self) -> str:
        if self.transport.run_dir:
            return self.transport.run_dir
        key = hashlib.sha1(repr(self.model_dump()).encode()).hexdigest()[:10]
        runtime = os.environ.get("XDG_RUNTIME_DIR")  # per user, 0700, on tmpfs: where sockets belong
        if runtime and os.path.isdir(runtime):
            return f"{runtime}/vidpipe-{key}"
        return f"/tmp/vidpipe-{os.getuid()}-{key}"

    def is_source(self, name: str) -> bool:
        """The first stage is the source: parse_config checks that its kind has the source role and no other has."""
        return self.stage_index(name) == 0

    def upstream(self, name: str) -> list[str]:
        """The stages `name` may receive from: the one before it on the main path; for an observer, the publishers."""
        i = self.stage_index(name)
        if self.stages[i].input_pattern == "sub":
            return [s.name for s in self.stages[:i] if s.publish]
        before = [s.name for s in self.stages[:i] if s.input_pattern == "pull"]  # observers are off the main path
        return before[-1:]

    def downstream(self, name: str) -> str | None:
        """The stage `name` sends its main output to, if any: the next one on the main path (observers are not on it)."""
        i = self.stage_index(name)
        if self.stages[i].input_pattern == "sub":
            return None
        return next((s.name for s in self.stages[i + 1 :] if s.input_pattern == "pull"), None)

    def observers(self, name: str) -> list[str]:
        """The stages that subscribe to what `name` publishes."""
        i = self.stage_index(name)
        return [s.name for s in self.stages[i + 1 :] if s.input_pattern == "sub"] if self.stages[i].publish else []

    def process_names(self) -> list[tuple[str, str | None]]:
        """(stage, stream) for every process of the pipeline: one source per stream, one of each other stage."""
        out: list[tuple[str, str | None]] = []
        for st in self.stages:
            if self.is_source(st.name):
                out += [(st.name, s.id) for s in self.streams]
            else:
                out.append((st.name, None))
        return out

    def metrics_port(self, stage: str, stream: str | None) -> int | None:
        st = self.stage(stage)
        if st.metrics_port is not None:
            return st.metrics_port + (self._stream_index(stream) if stream else 0)
        if self.metrics.port_base is None:
            return None
        return self.metrics.port_base + 1 + self.process_names().index((stage, stream))

    def _stream_index(self, stream: str) -> int:
        return [s.id for s in self.streams].index(stream)

    def realtime(self, stream: StreamConfig) -> bool:
        return stream.realtime if stream.realtime is not None else self.mode == "live"


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


# Member tags pydantic puts in a location when no member of a plain union fits; dropped where the walk below
# cannot tell them from keys.
_UNION_TAGS = ("str", "int", "function-after[_source(), union[str,int]]")


def _unwrap(tp: Any, discriminator: Any) -> tuple[Any, Any]:
    """`tp` without Annotated[...], and the discriminator (a field name) it or the field declares, if any."""
    while get_origin(tp) is Annotated:
        for meta in tp.__metadata__:
            if isinstance(meta, FieldInfo) and meta.discriminator is not None:
                discriminator = meta.discriminator
        tp = get_args(tp)[0]
    return tp, discriminator


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _model_field(model: type[BaseModel], key: Any) -> FieldInfo | None:
    for name, field in model.model_fields.items():
        if key in (name, field.alias, field.validation_alias):
            return field
    return None


def _tagged(member: Any, discriminator: str, tag: Any) -> bool:
    """Whether `member` (a model of a discriminated union) is the one whose discriminator field takes `tag`."""
    member, _ = _unwrap(member, None)
    field = _model_field(member, discriminator) if _is_model(member) else None
    return field is not None and get_origin(field.annotation) is Literal and tag in get_args(field.annotation)


def _walk(tp: Any, loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any, int]:
    """Follow a pydantic error location through the annotation `tp` it was validated against: the location as
    the document spells it (no union-member tags: `detector.coco_ssd.score` is `detector.score` in the YAML),
    the type reached, and how many parts of `loc` were followed (fewer than all where the annotation says
    nothing about the next part: Any, a key no model has, a validator's own location)."""
    out: list[Any] = []
    discriminator: Any = None
    i = 0
    while True:
        tp, discriminator = _unwrap(tp, discriminator)
        origin = get_origin(tp)
        if origin in (Union, UnionType):
            members = [m for m in get_args(tp) if m is not type(None)]
            if len(members) == 1:  # `X | None`: pydantic adds no tag
                tp, discriminator = members[0], None
                continue
        if i == len(loc):
            break
        part = loc[i]
        if origin in (Union, UnionType):
            if isinstance(discriminator, str):
                member = next((m for m in members if _tagged(m, discriminator, part)), None)
            else:  # a plain union: pydantic names the member by its type
                member = next((m for m in members if getattr(_unwrap(m, None)[0], "__name__", None) == part), None)
            if member is None:
                break
            tp, discriminator, i = member, None, i + 1  # the tag is not a key of the document
            continue
        if _is_model(tp):
            field = _model_field(tp, part)
            if field is None:
                break
            tp, discriminator = field.annotation, field.discriminator
        elif origin in (list, set, frozenset) and isinstance(part, int):
            tp, discriminator = (get_args(tp) or (Any,))[0], None
        elif origin is tuple and isinstance(part, int):
            args = get_args(tp)
            fixed = not (len(args) == 2 and args[1] is Ellipsis)
            if fixed and part >= len(args):
                break
            tp, discriminator = (args[part] if fixed else args[0]), None
        elif origin in (dict, Mapping) and len(get_args(tp)) == 2:
            tp, discriminator = get_args(tp)[1], None
        else:
            break
        out.append(part)
        i += 1
    return tuple(out) + tuple(p for p in loc[i:] if p not in _UNION_TAGS), tp, i


def _friendly(err: Any, near: str | None = None) -> str:  # a pydantic ErrorDetails
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return f"unknown key (did you mean {near}?)" if near else "unknown key (not part of the schema; check its spelling)"
    if kind == "missing":
        return "missing required field"
    msg = err.get("msg", "invalid")
    msg = msg.removeprefix("Value error, ")
    if "input" in err and kind not in ("model_type",) and not isinstance(err["input"], (dict, list)):
        msg += f" (got {err['input']!r})"
    return msg


def _problems(exc: ValidationError, model: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[str, str]]:
    """The errors of validating data as `model`, each as (field path in the document, message)."""
    out = []
    for err in exc.errors():
        raw = tuple(err["loc"])
        loc, tp, followed = _walk(model, raw)
        near = None
        if err["type"] == "extra_forbidden" and followed == len(raw) - 1 and _is_model(tp) and isinstance(raw[-1], str):
            # The unknown key is the last part, and the walk ended in the model that refused it.
            near = nearest(raw[-1], [f.alias or name for name, f in tp.model_fields.items()])
        out.append((_format_loc(prefix + loc), _friendly(err, near)))
    return out


def _document_position(data: Any, problem: tuple[str, str]) -> tuple[int, ...]:
    """Where a problem's field is in the document: the index of each key in its mapping (a key the document does
    not have: after the others), of each item in its list. A problem of the whole config names its field first."""
    path, msg = problem
    if not path:
        lead = re.match(r"[A-Za-z_][\w.\[\]-]*(?=: )", msg)
        path = lead[0] if lead else ""
    out: list[int] = []
    node, rest = data, path
    while rest:
        if rest.startswith("["):
            m = re.match(r"\[(\d+)\]", rest)
            if m is None or not isinstance(node, list):
                break
            index = int(m[1])
            out.append(index)
            node, rest = (node[index] if index < len(node) else None), rest[m.end() :]
            continue
        rest = rest.removeprefix(".")
        if not isinstance(node, dict):
            break
        keys = [str(k) for k in node]
        # The longest key the path goes on with: a stream id may hold a dot.
        key = max((k for k in keys if rest == k or rest.startswith((k + ".", k + "["))), key=len, default=None)
        if key is None:
            out.append(len(keys))
            break
        out.append(keys.index(key))
        node, rest = list(node.values())[keys.index(key)], rest[len(key) :]
    return tuple(out)


def _stage_problems(
    i: int, name: str | None, kind: str, options: dict[str, Any], stream_ids: list[str] | None, only_stage: str | None
) -> list[tuple[str, str]]:
    """The problems of stage `i` that its kind finds: the kind itself, its role (only the first stage is a
    source), its options (`stream_ids`: the config's streams, for options that name them; None when unknown)."""
    from pipeline.registry import resolve_stage  # here: the registry imports stage modules

    mine = only_stage is None or only_stage in (name, kind)
    # The first stage is always resolved: whether it is a source decides how many processes there are.
    # Another stage's kind is not, for `only_stage`: a decode process must not import torch to check infer's.
    if not mine and i > 0:
        return []
    try:
        cls = resolve_stage(kind)
    except (ImportError, ValueError) as exc:
        return [(f"stages[{i}].kind", str(exc))]
    if i == 0 and not cls.source:
        return [("", f"stages: the first stage must be a source (a Source stage kind such as decode), not {kind}")]
    if i > 0 and cls.source:
        return [(f"stages[{i}].kind", f"{kind} is a source: only the first stage may be one")]
    if not mine:
        return []
    try:
        opts = cls.Options.model_validate(options)
    except ValidationError as exc:
        return _problems(exc, cls.Options, ("stages", i, "options"))
    # Options that refer to the rest of the config (stream ids) check it here.
    check = getattr(opts, "check_against", None)
    if check is None or stream_ids is None:
        return []
    return [(f"stages[{i}].options.{path}", msg) for path, msg in check(stream_ids)]


def _stream_ids(streams: Any) -> list[str] | None:
    """The stream ids a document names, if it names them all (other fields of a stream may still be wrong)."""
    if not isinstance(streams, list) or not streams or not all(isinstance(s, dict) and isinstance(s.get("id"), str) for s in streams):
        return None
    return [s["id"] for s in streams]


def _each_stage_problems(data: dict[str, Any], only_stage: str | None) -> list[tuple[str, str]]:
    """The problems of each stage entry checked on its own, for a document whose top level is not valid: so that
    one `check` names every problem, not those of the top level first and the stages' after a fix."""
    stages = data.get("stages")
    if not isinstance(stages, list):
        return []
    ids = _stream_ids(data.get("streams"))
    out: list[tuple[str, str]] = []
    for i, raw in enumerate(stages):
        if not isinstance(raw, dict):
            continue  # the top level says so
        try:
            StageConfig.model_validate(raw)
        except ValidationError as exc:
            out += _problems(exc, StageConfig, ("stages", i))
        # Its kind and options are checked even where other fields of it are wrong.
        name, kind, options = raw.get("name"), raw.get("kind"), raw.get("options", {})
        if isinstance(kind, str) and isinstance(options, dict):
            out += _stage_problems(i, name if isinstance(name, str) else None, kind, options, ids, only_stage)
    return out


def parse_config(data: Any, source: str = "config", only_stage: str | None = None) -> PipelineConfig:
    """Validate a loaded YAML document, including each stage's options; raises ConfigError with every problem
    found, in the order of the document.

    `only_stage` (a stage name or kind): check the options of that stage alone. A stage process uses it, so
    that a decode process never imports the infer stage's modules (and torch) just to validate them.
    """
    if not isinstance(data, dict):
        raise ConfigError([("", "the config must be a YAML mapping (key: value)")], source)
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc, PipelineConfig)
        seen = set(problems)  # a stage's own errors are among the top level's too
        problems += [p for p in dict.fromkeys(_each_stage_problems(data, only_stage)) if p not in seen]
        raise ConfigError(sorted(problems, key=lambda p: _document_position(data, p)), source) from None
    problems = []
    ids = [s.id for s in cfg.streams]
    for i, st in enumerate(cfg.stages):
        problems += _stage_problems(i, st.name, st.kind, st.options, ids, only_stage)
    for i in range(len(cfg.stages)):
        try:
            cfg.output_endpoint(cfg.stages[i].name)
        except ValueError as exc:
            problems.append((f"stages[{i}].output", str(exc)))
        try:
            cfg.input_endpoint(cfg.stages[i].name)
        except ValueError as exc:
            problems.append((f"stages[{i}].input", str(exc)))
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: _document_position(data, p)), source)
    return cfg


def redacted(data: dict[str, Any], cfg: PipelineConfig) -> dict[str, Any]:
    """The config document `data` (which `cfg` was validated from) as it may be written beside results: every
    literal secret replaced, references (`${NAME}`, `file:PATH`) kept, the passwords and queries of source URLs out."""
    out = dict(data)
    streams = data.get("streams")
    if isinstance(streams, list):
        out["streams"] = [
            {**s, "source": redact_url(s["source"])} if isinstance(s, dict) and isinstance(s.get("source"), str) and not is_reference(s["source"]) else s
            for s in streams
        ]
    from pipeline.registry import resolve_stage  # here: the registry imports stage modules

    stages = []
    for raw, st in zip(data.get("stages") or [], cfg.stages):
        if isinstance(raw, dict) and isinstance(raw.get("options"), dict):
            options = resolve_stage(st.kind).Options.model_validate(st.options)
            raw = {**raw, "options": redact_options(raw["options"], options)}
        stages.append(raw)
    if stages:
        out["stages"] = stages
    return out


class ConfigWatch:
    """Whether a config file changed since the last look (its mtime), looked at no more than every `every_s`
    seconds: how live stages follow edits of the file they run from."""

    def __init__(self, path: Path | None, every_s: float = 1.0) -> None:
        self.path = path
        self.every_s = every_s
        self._next = 0.0
        self._mtime = self._stat()

    def _stat(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns if self.path is not None else None
        except OSError:
            return None

    def changed(self) -> bool:
        now = time.monotonic()
        if self.path is None or now < self._next:
            return False
        self._next = now + self.every_s
        mtime = self._stat()
        if mtime is None or mtime == self._mtime:
            return False
        self._mtime = mtime
        return True


def source_problems(streams: list[Any]) -> list[tuple[str, str]]:
    """File and folder sources that are not there or cannot be read (what `vidpipe check` adds to the config's own
    checks; a URL, a device or a source with an ${ENV} reference is the decode stage's to try). `streams`: the
    config's (StreamConfig) or a document's raw entries, their paths resolved already (pipeline/paths.py)."""
    problems = []
    for i, s in enumerate(streams):
        src = s.get("source") if isinstance(s, dict) else getattr(s, "source", None)
        if not isinstance(src, str) or "://" in src or "${" in src or src.isdigit():
            continue
        p = Path(src)
        if not p.exists():
            problems.append((f"streams[{i}].source", f"no such file or folder: {p}"))
        elif not os.access(p, os.R_OK) or (p.is_dir() and not os.access(p, os.X_OK)):
            problems.append((f"streams[{i}].source", f"cannot be read: {p}"))
    return problems


def load_config(path: str | os.PathLike[str], only_stage: str | None = None, sources: bool = False) -> PipelineConfig:
    """The config in the file at `path`, checked (see parse_config); `sources`: also that its file sources are
    there (`vidpipe check`), reported with the config's other problems, all at once."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError([("", f"file not found: {p}")], str(p)) from None
    except OSError as exc:
        raise ConfigError([("", f"cannot read: {exc.strerror}")], str(p)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([("", f"{where}not valid YAML: {getattr(exc, 'problem', exc)}")], str(p)) from None
    if isinstance(data, dict):
        # What the config reads is found beside it (pipeline/paths.py): it runs the same from any folder.
        data = resolve_config_inputs(data, p.resolve().parent, only_stage)
    missing = source_problems(data.get("streams") or [] if isinstance(data, dict) else []) if sources else []
    try:
        cfg = parse_config(data, str(p), only_stage)
    except ConfigError as exc:
        raise ConfigError(sorted(exc.problems + missing, key=lambda q: _document_position(data, q)), str(p)) from None
    if missing:
        raise ConfigError(missing, str(p))
    return cfg
