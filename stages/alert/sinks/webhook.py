"""The webhook sink: an HTTP(S) POST of the alert as JSON.

A 2xx answer is a delivery. 407, 408, 425, 429, 5xx, a 3xx (a redirect is not followed: a POST must
not turn into a GET, and fixing the URL lets the waiting alerts through) and every connection
problem are retried (a 407 is the proxy refusing our credentials, as a refused CONNECT for https is:
never a reason to drop the alert); any other 4xx means the receiver refuses this alert and retrying would never
help, so it is rejected. The `Idempotency-Key` header carries the alert id, so a receiver can drop
the repeat that follows a lost response.

Credentials: `user:pass@` in the URL becomes a Basic Authorization header (unless `headers` sets one), and
the URL, header values and proxy are secrets (`${NAME}`, `file:PATH`; see pipeline/secrets.py), shown in
errors and logs without password or query. A proxy is `proxy`, or else HTTPS_PROXY / HTTP_PROXY from the
environment with NO_PROXY honoured, as curl and requests do; https goes through it by CONNECT.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import ssl
import time
import urllib.request
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from pipeline.alert import Alert
from pipeline.secrets import Secret, redact_url, url_credentials
from stages.alert.sink import DeliveryError, Sink, alert_json

_RETRYABLE_4XX = {407, 408, 425, 429}  # 407: the proxy's credentials, not the alert


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


def _check_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"{what}: bad port: {exc}") from None


class WebhookOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["webhook"] = Field(description="An HTTP(S) POST of the alert as JSON.")
    url: Secret = Field(
        description="http:// or https:// URL the alert is POSTed to; redirects are not followed. A secret (it often holds a token): "
        "`${NAME}` or `file:PATH` keep it out of the config; `user:pass@` becomes a Basic Authorization header."
    )
    timeout_s: float = Field(5.0, gt=0, le=300, description="Longest connecting, sending or the answer may stall (a socket timeout).")
    headers: dict[str, Secret] = Field(
        default_factory=dict,
        description="Extra request headers, e.g. Authorization: Bearer ${WEBHOOK_TOKEN}; values are secrets. "
        "Content-Type and Idempotency-Key are set by the sink.",
    )
    proxy: Secret | None = Field(
        None, description="http://[user:pass@]host:port of an HTTP proxy (a secret); default: HTTPS_PROXY / HTTP_PROXY, NO_PROXY honoured."
    )
    include_snapshot: bool = Field(True, description="Send the JPEG snapshot, base64, as `snapshot_jpeg`.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretStr) -> SecretStr:
        _check_url(v.get_secret_value(), "the url")
        return v

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and urlsplit(v.get_secret_value()).scheme != "http":
            raise ValueError("must be an http:// URL (an HTTP proxy; https targets go through it by CONNECT)")
        if v is not None:
            _check_url(v.get_secret_value(), "the proxy")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key, value in v.items():
            if not key or any(c in key for c in " :\r\n\t"):
                raise ValueError(f"header name {key!r} is not valid")
            if key.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {key!r} is set by the sink")
            if "\r" in value.get_secret_value() or "\n" in value.get_secret_value():
                raise ValueError(f"header {key!r}: value must be one line")
        return v


def _basic(credentials: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()


def _env_proxy(scheme: str, host: str) -> str | None:
    """The proxy the environment names for this scheme and host (HTTP(S)_PROXY, NO_PROXY), if any."""
    if urllib.request.proxy_bypass_environment(host):
        return None
    proxy = urllib.request.getproxies_environment().get(scheme)
    return proxy if proxy and urlsplit(proxy).scheme == "http" and urlsplit(proxy).hostname else None


class WebhookSink(Sink):
    type = "webhook"
    Options = WebhookOptions

    def __init__(self, name: str, options: WebhookOptions) -> None:
        super().__init__(name)
        self.options = options
        url, credentials = url_credentials(options.url.get_secret_value())
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._where = redact_url(url)  # shown in errors
        self._ssl = ssl.create_default_context() if self._https else None
        self._headers = {k: v.get_secret_value() for k, v in options.headers.items()}
        if credentials is not None and not any(k.lower() == "authorization" for k in self._headers):
            self._headers["Authorization"] = _basic(credentials)
        proxy = options.proxy.get_secret_value() if options.proxy is not None else _env_proxy(parts.scheme, self._host)
        self._proxy: tuple[str, int, dict[str, str]] | None = None
        if proxy is not None:
            pparts = urlsplit(url_credentials(proxy)[0])
            pcred = url_credentials(proxy)[1]
            self._proxy = (pparts.hostname or "", pparts.port or 8080, {"Proxy-Authorization": _basic(pcred)} if pcred else {})
            self._where += f" (through proxy {redact_url(proxy)})"
        if self._proxy is not None and not self._https:
            # A plain-HTTP request through a proxy names the whole URL, and the proxy's credentials ride along.
            self._path = f"http://{parts.netloc}{self._path}"
            self._headers.update(self._proxy[2])

    def _connection(self) -> http.client.HTTPConnection:
        t = self.options.timeout_s
        if self._proxy is None:
            if self._https:
                return http.client.HTTPSConnection(self._host, self._port, timeout=t, context=self._ssl)
            return http.client.HTTPConnection(self._host, self._port, timeout=t)
        phost, pport, pheaders = self._proxy
        if not self._https:
            return http.client.HTTPConnection(phost, pport, timeout=t)
        conn = http.client.HTTPSConnection(phost, pport, timeout=t, context=self._ssl)
        conn.set_tunnel(self._host, self._port or 443, headers=pheaders)
        return conn

    def deliver(self, alert: Alert) -> None:
        body = alert_json(alert, self.options.include_snapshot)
        headers = {
            **self._headers,
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
