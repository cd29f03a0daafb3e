"""Secrets in a config: where their values come from, and what of them may be shown.

A secret field (typed `Secret`: passwords, tokens, header values, a webhook URL) takes a literal value or a
reference that keeps the value out of the config file:

- `${NAME}`: the environment variable NAME (anywhere in the value: `Bearer ${TOKEN}`); `$${` is a literal `${`;
- `file:PATH`: the whole content of a file (a Kubernetes or Docker secret mount), one trailing newline dropped.

References are resolved when the config is validated, in each process, so a missing variable or an unreadable
file is a config error at load that names the field. The value is a pydantic SecretStr: it prints as `**********`
in reprs, logs and errors. `redact_options` gives the config as it may be written to disk (the references
kept, literal secrets replaced), and `redact_url` a URL as it may be logged or used as a name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, BeforeValidator, SecretStr

REDACTED = "***"
_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MAX_FILE = 1 << 20  # a secret is small; a mistaken path to a video should not be read whole


def expand_env(text: str) -> str:
    """`${NAME}` replaced by the environment variable NAME; ValueError naming it when it is not set."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        name = m.group(1)
        value = os.environ.get(name)
        if value is None:
            raise ValueError(f"environment variable {name} is not set (referenced as ${{{name}}})")
        return value

    return _ENV_REF.sub(sub, text)


def resolve_secret(value: Any) -> Any:
    """The value a reference stands for (see the module docstring); other values are returned unchanged."""
    if isinstance(value, SecretStr) or not isinstance(value, str):
        return value
    if value.startswith("file:"):
        path = Path(value[5:]).expanduser()
        try:
            with path.open("rb") as f:
                data = f.read(_MAX_FILE + 1)
        except OSError as exc:
            raise ValueError(f"cannot read the secret file {str(path)!r}: {exc.strerror or exc}") from None
        if len(data) > _MAX_FILE:
            raise ValueError(f"the secret file {str(path)!r} is larger than 1 MiB")
        text = data.decode("utf-8", "replace")
        return text[:-1] if text.endswith("\n") else text
    return expand_env(value)


def is_reference(value: Any) -> bool:
    """Whether a config value names its secret (an environment variable or a file) instead of holding it."""
    if not isinstance(value, str):
        return False
    # Text around a reference (`Bearer ${TOKEN}`) is the author's to show: only the variable holds the secret.
    return value.startswith("file:") or any(m.group(1) for m in _ENV_REF.finditer(value))


Secret = Annotated[SecretStr, BeforeValidator(resolve_secret)]
"""A secret option: a literal, `${NAME}` or `file:PATH`; read it with `.get_secret_value()`."""


def redact_url(url: str) -> str:
    """A URL as it may be logged, named or written: the password of `user:pass@` replaced, no query string
    (tokens travel there: `?access_token=`, `?key=`). Anything that is not a URL comes back as it is."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{scheme}://{REDACTED}"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, REDACTED if parts.query else "", ""))


def url_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without its `user:pass@`, and the (user, password) it carried, if any."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), (unquote(user), unquote(password))


def redact_options(raw: Any, model: Any) -> Any:
    """`raw` (the options as written in the config) with the literal value of every secret field of `model`
    (the same options, validated) replaced by `***`; references are kept: they say where the secret lives
    without holding it."""
    if isinstance(model, SecretStr):
        return raw if is_reference(raw) else REDACTED
    if isinstance(model, BaseModel) and isinstance(raw, dict):
        out = dict(raw)
        for key, value in raw.items():
            if key in type(model).model_fields:
                out[key] = redact_options(value, getattr(model, key))
        return out
    if isinstance(model, dict) and isinstance(raw, dict):
        return {k: redact_options(v, model[k]) if k in model else v for k, v in raw.items()}
    if isinstance(model, (list, tuple)) and isinstance(raw, list) and len(raw) == len(model):
        return [redact_options(r, m) for r, m in zip(raw, model)]
    return raw
