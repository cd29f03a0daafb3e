"""The webhook sink: an HTTP(S) POST of the alert as JSON.

A 2xx answer is a delivery. 408, 425, 429, 5xx, a 3xx (a redirect is not followed: a POST must
not turn into a GET, and fixing the URL lets the waiting alerts through) and every connection
problem are retried; any other 4xx means the receiver refuses this alert and retrying would never
help, so it is rejected. The `Idempotency-Key` header carries the alert id, so a receiver can drop
the repeat that follows a lost response.
"""

from __future__ import annotations

import email.utils
import http.client
import ssl
import time
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.alert import Alert
from stages.alert.sink import DeliveryError, Sink, alert_json

_RETRYABLE_4XX = {408, 425, 429}


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


_RESERVED_HEADERS = {"content-type", "content-length", "idempotency-key", "host"}  # set by the sink itself


class WebhookOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["webhook"] = Field(description="An HTTP(S) POST of the alert as JSON.")
    url: str = Field(description="http:// or https:// URL the alert is POSTed to; redirects are not followed.")
    timeout_s: float = Field(5.0, gt=0, le=300, description="Longest connecting, sending or the answer may stall (a socket timeout).")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers (e.g. Authorization); Content-Type and Idempotency-Key are set by the sink."
    )
    include_snapshot: bool = Field(True, description="Send the JPEG snapshot, base64, as `snapshot_jpeg`.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"bad port: {exc}") from None
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not key or any(c in key for c in " :\r\n\t"):
                raise ValueError(f"header name {key!r} is not valid")
            if key.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {key!r} is set by the sink")
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {key!r}: value must be one line")
        return v


class WebhookSink(Sink):
    type = "webhook"
    Options = WebhookOptions

    def __init__(self, name: str, options: WebhookOptions) -> None:
        super().__init__(name)
        self.options = options
        parts = urlsplit(options.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # Shown in errors; without the query, which may carry a token.
        self._where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path or '/'}"
        self._ssl = ssl.create_default_context() if self._https else None

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.options.timeout_s, context=self._ssl)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.options.timeout_s)

    def deliver(self, alert: Alert) -> None:
        body = alert_json(alert, self.options.include_snapshot)
        headers = {
            **self.options.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": alert.id,
            "User-Agent": "vidpipe-alert",
        }
        # One connection per alert: alerts are rare, and a fresh connection never meets a
        # keep-alive socket the receiver has silently closed.
        conn = self._connection()
        try:
            conn.request("POST", self._path, body=body, headers=headers)
            resp = conn.getresponse()
            status, phrase = resp.status, resp.reason
            detail = resp.read(300).decode("utf-8", "replace").strip()
            retry_after = _retry_after(resp.getheader("Retry-After"))
        except TimeoutError as exc:
            raise DeliveryError(f"{self._where}: timed out after {self.options.timeout_s}s", reason="timeout") from exc
        except ssl.SSLError as exc:
            raise DeliveryError(f"{self._where}: TLS failed: {exc}", reason="tls") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise DeliveryError(f"{self._where}: {type(exc).__name__}: {exc}", reason="connect") from exc
        finally:
            conn.close()
        if 200 <= status < 300:
            return
        msg = f"{self._where} answered {status} {phrase}" + (f": {detail}" if detail else "")
        if 300 <= status < 400:
            raise DeliveryError(msg + " (redirects are not followed; fix the url)", reason="http_3xx")
        if status in _RETRYABLE_4XX:
            raise DeliveryError(msg, reason="http_4xx", retry_after_s=retry_after)
        if 400 <= status < 500:
            raise DeliveryError(msg, retryable=False, reason="http_4xx")
        if 500 <= status < 600:
            raise DeliveryError(msg, reason="http_5xx", retry_after_s=retry_after)
        raise DeliveryError(msg, reason="protocol")
