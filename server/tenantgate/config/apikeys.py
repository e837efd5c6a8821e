"""API-key and admin-API configuration: key format, hashing secret, Redis, cache bounds,
the admin listener and its credentials. Both are off unless configured."""

from __future__ import annotations

import ipaddress
import re

from pydantic import Field, ValidationInfo, field_validator, model_validator

from tenantgate.config.addresses import (
    check_grpc_host_given,
    check_host_port,
    check_socket_path_length,
    check_unix_url_absolute,
    grpc_unix_path,
)
from tenantgate.config.files import config_file_path
from tenantgate.config.redis_url import check_one_password, check_redis_url, check_text_password
from tenantgate.config.tls import TlsConfig
from tenantgate.config.types import Count, Duration, Model, Secret

_LOOPBACK_NAMES = ("localhost",)
# A lifetime or overlap longer than this is refused: now + it must fit the int64 fields of the
# admin API (beyond them a stored key could never be listed again), and ten years is plenty.
# Here, not in the key manager, so the CLI checks the same bound without loading Redis code.
MAX_LIFETIME_SECONDS = 10 * 365 * 86400
NO_OVERLAP = -1  # RotateKey's overlap_seconds for "the old key stops working now"; 0 = default


class ApiKeysConfig(Model):
    """Keys look like `<prefix>_<key id>_<secret>`; Redis holds only HMAC(hash_secret, ...)."""

    prefix: str = Field(default="tgk", pattern=r"^[a-z][a-z0-9]{1,15}$")
    hash_secret: Secret  # the server-side HMAC key; losing it invalidates every key
    redis_url: str = "redis://127.0.0.1:6379/0"
    # {fromEnv: ...} / {fromFile: ...}: keeps the password out of the URL, so out of a ConfigMap.
    redis_password: Secret | None = None
    # A looked-up record is trusted this long. Revocations are pushed to every replica over
    # Redis pub/sub at once; this is the bound when a message is lost (a replica that drops its
    # subscription also drops its whole cache on reconnect).
    cache_ttl: Duration = Field(default=5.0, gt=0, le=300)
    cache_entries: Count = Field(default=100_000, ge=1)
    redis_timeout: Duration = Field(default=0.25, gt=0)
    last_used_interval: Duration = Field(default=60.0, ge=1)  # one write per key per interval
    usage_flush_interval: Duration = Field(default=1.0, gt=0, le=60)  # counters are batched
    # How long the old key stays valid beside the new one (RotateKey's default overlap).
    rotate_overlap: Duration = Field(default=86400.0, ge=0, le=MAX_LIFETIME_SECONDS)
    channel: str = "tenantgate:apikeys:revoked"

    @field_validator("hash_secret")
    @classmethod
    def _long_enough(cls, value: Secret) -> Secret:
        if len(value.value) < 32:
            raise ValueError("secret must be at least 32 bytes")
        return value

    @model_validator(mode="after")
    def _one_password(self) -> ApiKeysConfig:
        check_one_password(self.redis_url, self.redis_password, "redis_url", "redis_password")
        return self

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not re.match(r"^(redis|rediss|unix)://", value):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        check_redis_url(value)  # ports and db number, which redis-py checks only at serve
        return value

    @field_validator("redis_password")
    @classmethod
    def _password_is_text(cls, value: Secret | None) -> Secret | None:
        return check_text_password(value)


class AdminConfig(Model):
    """The admin gRPC API on its own listener, refused to anyone without the admin credential."""

    listen: str = "127.0.0.1:9002"
    token: Secret | None = None  # `authorization: Bearer <token>` metadata
    tls: TlsConfig | None = None

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str, info: ValidationInfo) -> str:
        if value.startswith("unix:"):
            return _socket_relative_to_config(value, info)
        try:
            address = check_host_port(value)
        except ValueError:
            raise ValueError("must be host:port (port up to 65535) or unix:PATH") from None
        return check_ipv6_bracketed(check_grpc_host_given(address))

    @field_validator("token")
    @classmethod
    def _token_long_enough(cls, value: Secret | None) -> Secret | None:
        if value is not None and len(value.value) < 32:
            raise ValueError("token must be at least 32 bytes")
        # gRPC metadata carries printable ASCII only, and a bearer token has no spaces: any
        # other token could never be presented, locking the admin API. Never echoed.
        if value is not None and not all(0x21 <= byte <= 0x7E for byte in value.value):
            raise ValueError("token must be printable ASCII without spaces (it goes in an "
                             "`authorization: Bearer` header)")
        return value

    @model_validator(mode="after")
    def _authenticated(self) -> AdminConfig:
        mtls = self.tls is not None and self.tls.client_ca is not None
        if self.token is None and not mtls:
            raise ValueError("give token and/or tls.client_ca: the admin API is never open")
        # A bearer token over plain TCP is readable on the wire: only on loopback or a socket.
        if self.tls is None and not is_local_address(self.listen):
            raise ValueError("without tls, listen must be a loopback address or unix:PATH")
        return self


def _socket_relative_to_config(address: str, info: ValidationInfo) -> str:
    # Like listen.uds and every file path in the config: not relative to whichever directory
    # serve happens to run in. `unix://` is followed by an absolute path (gRPC's naming).
    check_unix_url_absolute(address, "a path relative to the config file")
    path = grpc_unix_path(address)
    if not path:
        raise ValueError("unix:PATH needs a socket path")
    resolved = check_socket_path_length(config_file_path(path, info))  # and no NUL byte
    return address if address.startswith("unix://") else "unix:" + resolved


def check_ipv6_bracketed(address: str) -> str:
    """A `host:port` whose IPv6 host is in brackets, as gRPC reads it: it takes `::1:9002` as
    one IPv6 address with the default port 443, not as [::1]:9002."""
    host, _, port = address.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    inner = host[1:-1] if bracketed else host
    if not bracketed and ":" in host:
        raise ValueError(f"{address}: an IPv6 address goes in brackets, e.g. [::1]:{port}")
    if "[" in inner or "]" in inner or (bracketed and not _is_ipv6(inner)):
        raise ValueError(f"{address}: brackets hold an IPv6 address, e.g. [::1]:{port}")
    return address


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def is_local_address(address: str) -> bool:
    """A `unix:PATH` or a loopback `host:port`: where a bearer token may go without TLS (the
    admin listener, and the `tenantgate keys` client)."""
    if address.startswith("unix:"):
        return True
    host = address.rpartition(":")[0]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:  # gRPC reads `::1:9002` as one IPv6 address, port 443: not loopback
        return False
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
