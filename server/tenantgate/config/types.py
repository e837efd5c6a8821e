"""Shared config value types: durations, byte sizes, referenced secrets, the strict base model."""

from __future__ import annotations

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

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_UNIT_BYTES = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3,
               "KB": 1000, "MB": 1000**2, "GB": 1000**3}


def _parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 500ms, 5m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError("must be a duration such as 30s, 500ms, 5m")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def _parse_size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        return int(m.group(1)) * _UNIT_BYTES[m.group(2)]
    raise ValueError("must be a size such as 1048576, 64KiB or 10MiB")


Duration = Annotated[float, BeforeValidator(_parse_duration)]
"""Seconds, written as a number or `500ms` / `30s` / `5m` / `1h` / `1d`."""

ByteSize = Annotated[int, BeforeValidator(_parse_size)]
"""Bytes, written as a number or `64KiB` / `10MiB`."""

# RFC 9110 field-name: a token of tchar.
_FIELD_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _header_name(value: Any) -> str:
    if not isinstance(value, str) or not _FIELD_NAME.match(value):
        raise ValueError("must be an HTTP header name such as x-api-key")
    return value.lower()


HeaderName = Annotated[str, BeforeValidator(_header_name)]
"""An HTTP header name, stored lower-case: Envoy hands tenantgate lower-case names, so a
name configured as `X-Api-Key` must still match."""


class Model(BaseModel):
    """Frozen, strict: unknown keys are errors (load.py adds a did-you-mean)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


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
            self._value = raw.encode()
        else:
            base = Path((info.context or {}).get("base_dir", "."))
            path = base / str(self.from_file)
            try:
                self._value = path.read_bytes().strip()
            except OSError as exc:
                raise ValueError(f"cannot read {path}: {exc.strerror}") from None
        if not self._value:
            raise ValueError("secret is empty")
        return self

    @property
    def value(self) -> bytes:
        return self._value

    def __repr__(self) -> str:  # never print the secret
        source = f"fromEnv={self.from_env}" if self.from_env else f"fromFile={self.from_file}"
        return f"Secret({source})"
