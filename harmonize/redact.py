"""Keep credentials out of logs, ledgers and metadata: one helper used everywhere.

A STAC URL may carry credentials in its user-info (``http://user:secret@host``) and in its
query (``?token=…``, a SAS ``sig=…``); a request log may print an ``Authorization`` header.
:func:`redact_url` makes one URL safe to store, :func:`redact_text` every URL, query and header
value inside a message, and :class:`RedactingFilter` applies the latter to log records (it is
installed on the loggers that print request URLs, and on the CLI's handlers).
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "redact_url", "redact_text", "redact", "RedactingFilter", "install_log_redaction"]

#: What a redacted value becomes.
MASK = "***"

# scheme://userinfo@ — the whole user-info goes (a bare token is often the user name)
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"<>]+@")
# ?key=value / &key=value anywhere (full URLs and the bare paths urllib3 logs)
_QUERY_VALUE = re.compile(r"(?P<key>[?&][^=&\s'\"#<>?]+=)[^&\s'\"#<>]+")
# Authorization: Basic …, 'Authorization': '…', x-api-key=…, cookies
_HEADER = re.compile(
    r"(?P<key>['\"]?(?:proxy-)?(?:authorization|x-api-key|api-key|cookie|set-cookie|"
    r"ocp-apim-subscription-key|x-amz-security-token)['\"]?\s*[:=]\s*['\"]?)"
    r"[^'\"\n,}]+",
    re.IGNORECASE,
)
# AWS-style secrets printed as key=value or key: value (GDAL/s3fs options in debug logs)
_SECRET_OPTION = re.compile(
    r"(?P<key>['\"]?(?:aws_secret_access_key|aws_session_token|secret|password|token)['\"]?"
    r"\s*[:=]\s*['\"]?)[^'\"\s,}&]+",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """``url`` with its user-info and every query value replaced by ``***``.

    Parameters
    ----------
    url
        Any URL or path (a path without credentials comes back unchanged).

    Returns
    -------
    str
        ``http://***@host:port/path?token=***`` for ``http://user:secret@host:port/path?token=t``:
        what was there stays visible, never its value.
    """
    text = str(url)
    parts = urlsplit(text)
    if not parts.scheme or not parts.netloc:
        return redact_text(text)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{MASK}@{host}" if "@" in parts.netloc else host
    query = "&".join(
        f"{k}={MASK}" if sep else k for k, sep, _ in (p.partition("=") for p in parts.query.split("&") if p)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """``text`` with credentials in URLs, query strings and header-like ``key: value`` masked."""
    if not text:
        return text
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    out = _QUERY_VALUE.sub(lambda m: f"{m['key']}{MASK}", out)
    out = _HEADER.sub(lambda m: f"{m['key']}{MASK}", out)
    return _SECRET_OPTION.sub(lambda m: f"{m['key']}{MASK}", out)


def redact(value: Any) -> Any:
    """``value`` with :func:`redact_text` applied to every string in it (dicts, lists, tuples)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that formats each record's message and masks credentials in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is logging's problem, not ours
            return True
        clean = redact_text(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


#: Loggers that print request URLs and headers (attached to the logger: a filter on a parent
#: logger does not see its children's records).
REQUEST_LOGGERS = (
    "urllib3.connectionpool",
    "urllib3.util.retry",
    "requests",
    "pystac_client.stac_api_io",
    "pystac_client.client",
    "botocore.endpoint",
    "botocore.auth",
    "botocore.credentials",
    "s3fs",
    "fsspec",
    "rasterio",
    "rasterio.env",
    "rasterio._env",
    "harmonize",
    "pipelines",
)

_FILTER = RedactingFilter()


def install_log_redaction(*handlers: logging.Handler) -> None:
    """Put the redacting filter on :data:`REQUEST_LOGGERS` and on ``handlers`` (idempotent)."""
    for name in REQUEST_LOGGERS:
        lg = logging.getLogger(name)
        if _FILTER not in lg.filters:
            lg.addFilter(_FILTER)
    for h in handlers:
        if _FILTER not in h.filters:
            h.addFilter(_FILTER)
