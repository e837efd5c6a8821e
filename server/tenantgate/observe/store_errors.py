"""How a log line says why a store failed (quota Redis, API keys, the admin API): one rule."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, unquote_plus, urlsplit

MAX_CHARS = 300  # Redis's and redis-py's messages fit; a runaway one does not flood the log
MASKED_FROM_CHARS = 4  # a shorter secret is left: masking it would garble every message
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def describe(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """`Class: message`, on one line, at most MAX_CHARS, every form of each secret masked.

    Redis and redis-py name the host and the refusal (WRONGPASS, NOPERM, READONLY, a TLS
    verification failure), never a password or a command's arguments; should one ever echo a
    secret, it is replaced by `***` as given, percent-decoded and form-decoded."""
    message = str(exc)
    said = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    for form in _forms(secrets):
        said = said.replace(form, "***")
    said = " ".join(_CONTROL.sub(" ", said).split())  # a log line must stay one line
    return said if len(said) <= MAX_CHARS else said[:MAX_CHARS - 3] + "..."


def url_secrets(url: str) -> list[str]:
    """The passwords a Redis URL holds, as written: its `user:pass@` and `?password=` values."""
    parts = urlsplit(url)
    pairs = (pair.partition("=") for pair in parts.query.split("&"))
    query = [value for key, _, value in pairs if unquote_plus(key) == "password"]
    return [p for p in [parts.password or "", *query] if p]


def redis_secrets(url: str, password: bytes | None) -> list[str]:
    """Every password a Redis store's failure could echo: the URL's and the one configured
    apart (a secret's bytes, checked to be UTF-8 when the config loaded)."""
    return url_secrets(url) + ([password.decode()] if password is not None else [])


def _forms(secrets: Iterable[str]) -> list[str]:
    """Each secret as given and decoded; longest first, so a form holding another is masked
    whole."""
    forms = {form for raw in secrets for form in (raw, unquote(raw), unquote_plus(raw))}
    return sorted((f for f in forms if len(f) >= MASKED_FROM_CHARS), key=len, reverse=True)
