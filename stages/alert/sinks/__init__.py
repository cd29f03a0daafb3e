"""The sinks an alert stage can deliver to: one module each in this package, holding its options (whose
`type` the config names) and its Sink class, found by the plugin registry. Adding a sink is one new file.

A sink's options are checked at config load, so a bad URL or topic stops the pipeline before it starts.
A sink module imports its client library (paho-mqtt, say) only when the sink connects, so reading a
config loads none of them.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, TypeAdapter

from pipeline.plugins import Registry
from stages.alert.sink import Sink

SINKS: Registry[type[Sink]] = Registry("alert sink", Sink, "stages.alert.sinks", key="type")
SINK_TYPES: tuple[str, ...] = tuple(SINKS.names())
# The options of every sink, told apart by `type` (errors name the sink's fields).
SinkConfig = Annotated[Union[tuple(cls.Options for cls in SINKS.all().values())], Field(discriminator="type")]  # type: ignore[misc]  # noqa: UP007
_ADAPTER: TypeAdapter[Any] = TypeAdapter(SinkConfig)


def parse_sink_config(data: Any) -> BaseModel:
    """Validate one sink's options (a mapping with `type`); raises pydantic.ValidationError."""
    return _ADAPTER.validate_python(data)


def build_sink(name: str, config: BaseModel | dict[str, Any]) -> Sink:
    """The sink for validated options (or a mapping, validated here). Nothing here fails for an unreachable
    receiver: connections and files open on the first delivery (a zmq_pub sink tries to bind at once, so
    subscribers can join before the first alert), and one sink that is down does not stop the others."""
    opts = parse_sink_config(config) if isinstance(config, dict) else config
    return SINKS.get(opts.type)(name, opts)  # type: ignore[attr-defined,call-arg]
