"""Shared config value types: durations, byte sizes, flags and numbers, HTTP header names and
methods, referenced secrets, the strict base model."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    model_validator,
)

from tenantgate.config.files import SECRET_FILE_MAX_BYTES, read_small_file

# google.protobuf.Duration's documented range ends at 10000 years: a longer one is invalid.
DURATION_MAX_SECONDS = 315_576_000_000

# The longest duration any setting takes: 100 years. Timeouts go to socket.settimeout, threading
# and the event loop as nanoseconds in a 64-bit integer (about 292 years); a longer one was an
# OverflowError traceback at serve, not a config error.
DURATION_LIMIT_SECONDS = 100 * 365 * 86400

# Patterns here are used with fullmatch: `match` with `$` also accepts a trailing newline.
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*")
_UNIT_BYTES = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3,
               "KB": 1000, "MB": 1000**2, "GB": 1000**3}


def is_duration_text(text: str) -> bool:
    """Whether `text` is written as a duration (`90d`, `500ms`), whatever its size."""
    return _DURATION.fullmatch(text) is not None


def _parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 500ms, 5m")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            seconds = math.inf
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError("must be a duration such as 30s, 500ms, 5m")
    # YAML's .nan and .inf are floats: NaN compares false with every bound, inf never ends.
    if not math.isfinite(seconds):
        raise ValueError("must be a finite duration such as 30s, 500ms, 5m")
    if seconds < 0:
        raise ValueError("must not be negative")
    if seconds > DURATION_LIMIT_SECONDS:
        raise ValueError("must be at most 36500d (100 years)")
    return seconds


# Stopping waits at most this long: Kubernetes' grace period and every orchestrator's stop
# timeout are far shorter, and a longer wait only looked like a process ignoring SIGTERM.
STOP_WAIT_MAX_SECONDS = 3600.0


def check_stop_wait(seconds: float) -> float:
    if seconds > STOP_WAIT_MAX_SECONDS:
        raise ValueError("must be at most 1h: Kubernetes' grace period and every "
                         "orchestrator's stop timeout are far shorter")
    return seconds


def _parse_size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (m := _SIZE.fullmatch(value)):
        return int(m.group(1)) * _UNIT_BYTES[m.group(2)]
    raise ValueError("must be a size such as 1048576, 64KiB or 10MiB")


def _flag(value: Any) -> bool:
    # Not pydantic's lax bool: it read 0, 1, "off" and "no" (a quoted string in YAML) as flags.
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _not_a_flag(value: Any) -> Any:
    # bool is an int in Python: pydantic read `true` as 1 (or 1.0).
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


Flag = Annotated[bool, BeforeValidator(_flag)]
"""true or false, nothing coerced to it."""

Count = Annotated[int, BeforeValidator(_not_a_flag)]
"""A whole number; a boolean is refused."""

Number = Annotated[float, BeforeValidator(_not_a_flag)]
"""A number; a boolean is refused."""

Duration = Annotated[float, BeforeValidator(_parse_duration)]
"""Seconds, written as a number or `500ms` / `30s` / `5m` / `1h` / `1d`."""

ByteSize = Annotated[int, BeforeValidator(_parse_size)]
"""Bytes, written as a number or `64KiB` / `10MiB`."""

# RFC 9110 5.6.2 token, what a field name and a method are: tchar, one or more (fullmatch: a
# YAML `|` scalar ends in a newline).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _header_name(value: Any) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise ValueError("must be an HTTP header name such as x-api-key")
    if "_" in value:
        # The generated Envoy config refuses every request carrying such a header, and CGI/WSGI
        # stacks read `x_tenant_id` as `x-tenant-id`: stripping one would leave the other.
        raise ValueError("must not hold an underscore: Envoy refuses requests with one "
                         "(use - instead)")
    return value.lower()


HeaderName = Annotated[str, BeforeValidator(_header_name)]
"""An HTTP header name, stored lower-case: Envoy hands tenantgate lower-case names, so a
name configured as `X-Api-Key` must still match."""


def is_one_method(value: str) -> bool:
    """Whether a rule's method is one HTTP method, compared as written (upper-cased): `*` or
    `GET,POST` would match no request, and the rule would silently never apply."""
    return value != "*" and _TOKEN.fullmatch(value) is not None


class Model(BaseModel):
    """Frozen, strict: unknown keys are errors (load.py adds a did-you-mean)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(Model):
    """A secret referenced from the environment or a file, never written in the config."""

    from_env: str | None = Field(default=None, alias="fromEnv")
    from_file: str | None = Field(default=None, alias="fromFile")
    _value: bytes = PrivateAttr(default=b"")

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> Secret:
        if (self.from_env is None) == (self.from_file is None):
            raise ValueError("give exactly one of fromEnv or fromFile")
        if self.from_env is not None:
            raw = os.environ.get(self.from_env)
            if raw is None:
                raise ValueError(f"environment variable {self.from_env} is not set")
            try:
                self._value = raw.encode()
            except UnicodeEncodeError:  # bytes Python kept as surrogates; never echo them
                raise ValueError(f"environment variable {self.from_env} is not valid "
                                 "UTF-8") from None
            # A file's surrounding whitespace is stripped (editors end it with a newline); a
            # variable's is refused, not stripped: a Kubernetes Secret made --from-file puts
            # that newline in the variable, and stripping would silently change a secret that
            # deployments already use (API-key digests, context keys installed in Postgres by
            # `tenantgate db add-key --secret-env`). Refused, both sources give the same bytes.
            if self._value != self._value.strip():
                raise ValueError(f"environment variable {self.from_env} begins or ends with "
                                 "whitespace (a trailing newline?): remove it; a secret cannot "
                                 "begin or end with whitespace")
        else:
            base = Path((info.context or {}).get("base_dir", "."))
            self._value = read_small_file(base / str(self.from_file), SECRET_FILE_MAX_BYTES,
                                          "not a secret").strip()
        if not self._value:
            raise ValueError("secret is empty")
        return self

    @property
    def value(self) -> bytes:
        return self._value

    def __repr__(self) -> str:  # never print the secret
        source = f"fromEnv={self.from_env}" if self.from_env else f"fromFile={self.from_file}"
        return f"Secret({source})"
