"""Shared config value types: durations, byte sizes, referenced secrets, the strict base model."""

from __future__ import annotations

import json
import math
import os
import re
import ssl
import stat
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    model_validator,
)

from tenantgate.config.paths import NOT_NORMALIZED

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

# RFC 9110 field-name: a token of tchar (fullmatch: a YAML `|` scalar ends in a newline).
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _header_name(value: Any) -> str:
    if not isinstance(value, str) or not _FIELD_NAME.fullmatch(value):
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


_MULTI_HOST_SCHEMES = ("redis+sentinel", "redis+cluster", "rediss+cluster")


# [0-9], not \d: \d matches any Unicode digit, which int() reads (full-width `009` is port 9) and
# gRPC refuses.
_HOST_PORT = re.compile(r"\[?[\w.:-]*\]?:([0-9]{1,5})")


def check_host_port(value: str) -> str:
    """`host:port` with a port that exists (0 asks the system for a free one)."""
    match = _HOST_PORT.fullmatch(value)
    if match is None or int(match.group(1)) > 65535:
        raise ValueError("must be host:port with a port up to 65535, e.g. 127.0.0.1:9001")
    return value


def check_text_password(value: Secret | None) -> Secret | None:
    """A Redis password read from a secret: redis-py takes it as text, and bytes that are not
    UTF-8 passed check-config and ended serve in a UnicodeDecodeError traceback."""
    if value is not None:
        try:
            value.value.decode()
        except UnicodeDecodeError:
            raise ValueError("the password is not valid UTF-8") from None
    return value


def check_one_password(url: str, password: Secret | None, url_key: str,
                       password_key: str) -> None:
    """A Redis password goes either in the URL or in its secret reference, never both."""
    # redis-py takes the URL's (`user:pass@`, else `?password=`) over the one it is handed.
    parts = urlsplit(url)
    if password is not None and (parts.password or "password" in parse_qs(parts.query)):
        raise ValueError(f"give the password either in {url_key} or as {password_key}, "
                         "not both")


def check_redis_url(url: str) -> None:
    """Refuse a Redis URL whose hosts, ports or database number the client would only reject
    when the server starts, as a traceback. The scheme is checked by the caller."""
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise ValueError(f"not a valid url: {exc}") from None
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// url names the socket: unix:///run/redis.sock")
    elif parts.scheme in _MULTI_HOST_SCHEMES:
        redis_hosts(parts.netloc, 6379)
    else:
        _redis_host(parts.netloc.rpartition("@")[2], in_list=False, default_port=6379)
    _check_redis_db(parts.scheme, parts.path, query)
    if parts.scheme in ("redis", "rediss", "unix") and parts.query:
        _check_redis_query(parts.scheme, parts.query)


def redis_hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    """The `host:port,host:port` list of a Sentinel or Cluster URL (after any credentials),
    each entry checked; a missing port is `default_port`."""
    return [_redis_host(item, in_list=True, default_port=default_port)
            for item in netloc.rpartition("@")[2].split(",")]


def _redis_host(item: str, in_list: bool, default_port: int) -> tuple[str, int]:
    if item.startswith("["):  # [IPv6] or [IPv6]:port: like a hostname, the port is optional
        host, closed, after = item[1:].partition("]")
        if not closed or after[:1] not in ("", ":"):
            raise ValueError(f"{item!r} must be host:port")
        colon, port = after[:1], after[1:]
    else:
        host, colon, port = item.rpartition(":") if ":" in item else (item, "", "")
    if in_list and not host:
        raise ValueError(f"every entry of the host list needs a host, got {item!r}")
    if colon and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"port {port!r} in {item!r} must be a number from 1 to 65535")
    return host, int(port) if port else default_port


_REDIS_DB_MAX = 2**31 - 1


def _check_redis_db(scheme: str, path: str, query: dict[str, list[str]]) -> None:
    segments = [s for s in path.split("/") if s]
    if scheme == "redis+sentinel":
        if not segments:
            raise ValueError("a sentinel url names the master: redis+sentinel://host:port/mymaster")
        if len(segments) > 2:
            raise ValueError("a sentinel url's path is /master or /master/db")
        db = segments[1:]
    elif scheme in ("redis", "rediss"):
        if len(segments) > 1:
            raise ValueError("the url's path is the database number only, e.g. /0")
        db = query.get("db", segments)[:1]  # redis-py prefers ?db= to the path
    elif scheme == "unix":
        db = query.get("db", [])[:1]
    else:  # a cluster has only database 0: its path is not read
        db = []
    for value in db:
        if not (value.isascii() and value.isdigit()):
            raise ValueError(f"the database number must be a whole number, got {value!r}")
        # SELECT takes a 32-bit int (the server's `databases` setting bounds it further, unknown
        # here): past it, every connection's handshake would fail. The length first: int()
        # refuses more than 4300 digits with a ValueError of its own.
        digits = value.lstrip("0") or "0"
        if len(digits) > len(str(_REDIS_DB_MAX)) or int(digits) > _REDIS_DB_MAX:
            raise ValueError(f"the database number must be at most {_REDIS_DB_MAX}, got {value!r}")


# Query options redis-py reads as text and the stores use. Any other name went to the
# connection as a keyword (a TypeError at serve) or as a string where it wants an object
# (`retry=x`, `credential_provider=x`: a failure at the first call).
_REDIS_QUERY_OPTIONS = frozenset({
    "db", "protocol", "client_name", "username", "password", "socket_timeout",
    "socket_connect_timeout", "socket_keepalive", "retry_on_timeout", "max_connections",
    "health_check_interval"})
_REDIS_TLS_QUERY_OPTIONS = frozenset({
    "ssl_keyfile", "ssl_certfile", "ssl_password", "ssl_cert_reqs", "ssl_ca_certs",
    "ssl_ca_path", "ssl_ca_data", "ssl_check_hostname", "ssl_min_version", "ssl_ciphers",
    "ssl_include_verify_flags", "ssl_exclude_verify_flags"})
# What CLIENT SETNAME takes: printable ASCII, no space (else every handshake fails).
_CLIENT_NAME = re.compile(r"[!-~]+")


def _check_redis_query(scheme: str, query: str) -> None:
    """redis-py converts and checks query arguments only when it builds a connection: build
    one as the stores do, without dialling, after refusing options it would not use."""
    from redis.asyncio.connection import ConnectionPool  # here: the rest of config needs no redis
    from redis.exceptions import RedisError

    for name in parse_qs(query):
        if name in _REDIS_TLS_QUERY_OPTIONS and scheme != "rediss":
            raise ValueError(f"{name!r} is a TLS option: it needs a rediss:// url")
        if name not in _REDIS_QUERY_OPTIONS | _REDIS_TLS_QUERY_OPTIONS:
            raise ValueError(f"unknown query option {name!r}")
    try:
        connection = ConnectionPool.from_url(f"{scheme}://localhost?{query}").make_connection()
    except (ValueError, RedisError) as exc:  # "Invalid value for 'protocol' in connection URL."
        raise ValueError(str(exc)) from None
    if connection.client_name is not None and not _CLIENT_NAME.fullmatch(connection.client_name):
        raise ValueError("client_name must be printable ASCII without spaces")
    if (tls := getattr(connection, "ssl_context", None)) is not None:
        _check_tls_query(tls.min_version, tls.ciphers)


def _check_tls_query(min_version: int | None, ciphers: str | None) -> None:
    # redis-py builds the TLS context only as it connects: every connection failed instead.
    if min_version is not None and min_version not in {v.value for v in ssl.TLSVersion}:
        raise ValueError("ssl_min_version must be the number of an ssl.TLSVersion (771 is "
                         f"TLSv1_2, 772 TLSv1_3), got {min_version}")
    if ciphers is not None:
        try:
            ssl.create_default_context().set_ciphers(ciphers)
        except ssl.SSLError:
            raise ValueError(f"ssl_ciphers {ciphers!r} selects no cipher OpenSSL knows") from None


class Model(BaseModel):
    """Frozen, strict: unknown keys are errors (load.py adds a did-you-mean)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# A secret is a key or a token, a few hundred bytes: a larger file is a wrong path (a log, an
# image, /dev/zero), and reading it whole could exhaust memory.
SECRET_FILE_MAX_BYTES = 64 * 1024
# A JWKS document, from a file or fetched: what the key set reads and check-config checks.
MAX_JWKS_BYTES = 512 * 1024


class UnfitFile(ValueError):
    """Not a regular file, or larger than the bound: str() says which, in a few words."""

    def __init__(self, reason: str, *, too_large: bool = False) -> None:
        super().__init__(reason)
        self.too_large = too_large


def read_regular_file(path: Path, limit: int) -> bytes:
    """A regular file's bytes, at most `limit` of them; UnfitFile, or OSError as raised."""
    # A device, FIFO or directory: /dev/zero never ends, a FIFO waits for a writer, opening a
    # device may act. Looked at before opening, so none is opened, and again on the descriptor:
    # a reload runs on the event loop, and a FIFO swapped in meanwhile would block the server
    # (O_NONBLOCK; it changes nothing for a regular file). Symlinks are followed: a Kubernetes
    # volume mounts its files through them.
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise UnfitFile("not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnfitFile("not a regular file")
        with open(fd, "rb", closefd=False) as file:
            data = b"" if info.st_size > limit else file.read(limit + 1)
    finally:
        os.close(fd)
    if info.st_size > limit or len(data) > limit:
        raise UnfitFile(f"larger than {limit} bytes", too_large=True)
    return data


def read_pipe(path: Path, limit: int) -> bytes:
    """A pipe's or FIFO's bytes, at most `limit` of them: waits for its writer, so only for a
    command, never on the event loop. UnfitFile when larger, or OSError as raised."""
    with path.open("rb") as pipe:
        data = pipe.read(limit + 1)
    if len(data) > limit:
        raise UnfitFile(f"larger than {limit} bytes", too_large=True)
    return data


def read_small_file(path: Path, limit: int, too_large: str) -> bytes:
    """read_regular_file for the config: ValueError naming the path and why."""
    try:
        return read_regular_file(path, limit)
    except UnfitFile as exc:
        if exc.too_large:
            raise _larger_than(path, limit, too_large) from None
        raise ValueError(f"{path} is {exc}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None


def read_file_or_pipe(path: Path, limit: int, too_large: str) -> bytes:
    """For a command's file option, never the server: a regular file as read_small_file reads
    it, or a pipe or FIFO (`<(vault read ...)`, /dev/stdin), bounded too; ValueError naming the
    path and why. A pipe keeps a secret off disk; a command may wait for its writer (a server
    reload may not). Never a device or a directory: /dev/zero, read whole, exhausted memory."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISREG(mode):
            return read_small_file(path, limit, too_large)
        if not stat.S_ISFIFO(mode):
            raise ValueError(f"{path} is not a regular file or a pipe")
        return read_pipe(path, limit)
    except UnfitFile:  # read_pipe's only one; read_small_file raises a plain ValueError
        raise _larger_than(path, limit, too_large) from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None


def _larger_than(path: Path, limit: int, too_large: str) -> ValueError:
    return ValueError(f"{path} is larger than {limit // 1024} KiB: {too_large}")


def read_jwks_file(path: Path) -> dict[str, Any]:
    """A `jwks.file`'s document: check-config and every key-set refresh read it this way.
    ValueError naming the path and why it cannot serve as a key set."""
    data = read_small_file(path, MAX_JWKS_BYTES, "not a JWKS document")
    try:
        document = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise ValueError(f"{path} is not a JWKS document (not UTF-8 JSON)") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        # A file being rewritten by an IdP or sidecar must not empty the key set.
        raise ValueError(f"{path} is not a JWKS document (an object with a keys list)")
    return document


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


# Characters a path reaches Check with either as themselves or percent-encoded, as the client
# sent them: RFC 3986's pchar less the unreserved ones (Envoy decodes their escapes) and ";"
# (always refused), plus "[" and "]", which Envoy 1.40 also passes either way.
PATH_ESCAPABLE = ":@!$&'()*+,=[]"
# Characters Envoy only ever passes escaped (it escapes these, and refuses a raw space, control
# or non-ASCII character): a rule spelling one out would never match.
_ALWAYS_ESCAPED = ' "<>^`|'
# Never in a path Check matches: the query and fragment are not part of it, and paths with
# these are refused (NOT_NORMALIZED).
_NEVER_IN_PATH = "?#;\\"


# RFC 9110 5.6.2 token: what a method may be.
_METHOD_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def is_one_method(value: str) -> bool:
    """Whether a rule's method is one HTTP method, compared as written (upper-cased): `*` or
    `GET,POST` would match no request, and the rule would silently never apply."""
    return value != "*" and _METHOD_TOKEN.fullmatch(value) is not None


# A Unix socket's path goes in sun_path: 108 bytes on Linux, one of them the closing NUL.
SOCKET_PATH_MAX_BYTES = 107


def check_socket_path_length(path: str) -> str:
    """A socket path the kernel can hold; gRPC only says it could not bind."""
    if (size := len(os.fsencode(path))) > SOCKET_PATH_MAX_BYTES:
        raise ValueError(f"{path} is {size} bytes: a Unix socket path holds at most "
                         f"{SOCKET_PATH_MAX_BYTES} (sun_path); choose a shorter one")
    return path


def socket_path_problem(path: str) -> str | None:
    """Why binding a Unix socket at `path` would fail, found without binding, or None. A
    socket already there is unix_socket.remove_stale_socket's to judge: stale or in use."""
    directory = os.path.dirname(path) or "."
    try:
        if not stat.S_ISDIR(os.stat(directory).st_mode):
            return f"{directory} is not a directory"
    except OSError as exc:  # missing, not searchable, a loop
        return f"directory {directory}: {exc.strerror}"
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return _socket_create_problem(directory)
    except OSError as exc:
        return exc.strerror
    if stat.S_ISDIR(mode):
        return "a directory is in the way: choose a path for the socket file itself"
    if not stat.S_ISSOCK(mode):  # gRPC does not remove it, and bind says "address in use"
        return "a file that is not a socket is in the way: remove it or choose another path"
    return None


def socket_directory_missing(path: str) -> bool:
    """Whether the directory a socket at `path` would be created in does not exist (yet: a
    config is checked before rollout, where the pod's volume is not mounted)."""
    try:
        os.stat(os.path.dirname(path) or ".")
    except FileNotFoundError:
        return True
    except OSError:  # not searchable, a loop: socket_path_problem says so
        return False
    return False


def _socket_create_problem(directory: str) -> str | None:
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return f"directory {directory} is on a read-only file system"
    except OSError as exc:
        return f"directory {directory}: {exc.strerror}"
    effective = os.access in os.supports_effective_ids
    if not os.access(directory, os.W_OK | os.X_OK, effective_ids=effective):
        return f"directory {directory}: permission denied (cannot create the socket)"
    return None


def config_file_path(value: str, info: ValidationInfo) -> str:
    """A file path from the config: relative to the config file's directory, not to wherever
    serve runs. A NUL byte, which no file name holds, is refused here: os calls raise
    ValueError for it, a traceback at serve."""
    if "\x00" in value:
        raise ValueError("a NUL byte cannot be part of a file name")
    if Path(value).is_absolute():
        return value
    return str(Path((info.context or {}).get("base_dir", ".")) / value)


def as_envoy_passes(path: str) -> str:
    """A route or endpoint pattern written as Envoy passes paths to Check, else ValueError.

    Escapable characters as themselves: Check refuses a path escaping a character that some
    rule spells out (policy.RouteTable), and a rule holding the escape would match neither
    form. Characters Envoy always escapes, escaped. Either way the rule would never apply."""
    for char in path:
        if char in _NEVER_IN_PATH:
            raise ValueError(f"{char!r} is never part of a path Check matches")
        if char in _ALWAYS_ESCAPED or not char.isascii() or not char.isprintable():
            escape = "".join(f"%{b:02X}" for b in char.encode("utf-8", "replace"))
            raise ValueError(f"write {char!r} as {escape}, as Envoy passes it to Check")
    folded = path.lower()
    for char in PATH_ESCAPABLE:
        escape = f"%{ord(char):02X}"
        if escape.lower() in folded:
            raise ValueError(f"write {char!r} as itself, not as {escape}")
    if found := NOT_NORMALIZED.search(path):
        fragment = found.group()
        if fragment == "%":
            raise ValueError(f"{path[found.start():found.start() + 3]!r}: a % needs two hex "
                             "digits (write a literal % as %25), or Check refuses the path")
        if len(fragment) == 5 and fragment[:3] == "%25":
            raise ValueError(f"{fragment!r}: a double-encoded escape (Check refuses it: a "
                             "backend decoding twice would read another path)")
        if fragment[-3:-2] == "%" and fragment[-2:-1].lower() in "89abcdef":
            raise ValueError(f"{fragment!r}: not UTF-8 (Check refuses escapes that are not), "
                             "so the rule would never apply")
        raise ValueError(f"{fragment!r}: Envoy normalizes paths before Check, and Check "
                         "refuses a path holding this, so the rule would never apply")
    return path


def check_grpc_host_given(address: str) -> str:
    """gRPC refuses to bind an empty host (`:9001`), which Prometheus' server reads as every
    IPv4 address: said at load, not as serve's bind failure."""
    if address.rpartition(":")[0] in ("", "[]"):
        raise ValueError(f"{address!r}: give a host (0.0.0.0 for every IPv4 address, [::] for "
                         "every address): gRPC cannot listen on an empty one")
    return address


def check_unix_url_absolute(address: str, relative: str) -> str:
    """gRPC reads `unix://run/a.sock` as /run/a.sock (`run` its authority), not the relative path
    it looks like: `unix://` must be followed by an absolute path. `relative` says what unix:PATH
    is relative to, in the message."""
    if address.startswith("unix://") and not address.startswith("unix:///"):
        raise ValueError(f"{address}: unix:// is followed by an absolute path (unix:///abs/"
                         f"path); write unix:PATH for {relative}")
    return address


def grpc_unix_path(address: str) -> str | None:
    """The file of a gRPC `unix:PATH` or `unix:///abs/path` address, else None (TCP, or an
    abstract socket, which has no file)."""
    if address.startswith("unix://"):
        return address[len("unix://"):]
    if address.startswith("unix:"):
        return address[len("unix:"):]
    return None
