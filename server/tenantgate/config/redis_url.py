"""Redis URLs and passwords as the config gives them: what redis-py would only refuse when serve
first connects, refused at load."""

from __future__ import annotations

import re
import ssl
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from tenantgate.config.types import Secret

_MULTI_HOST_SCHEMES = ("redis+sentinel", "redis+cluster", "rediss+cluster")


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
    else:
        _check_hosts(parts.scheme, parts.netloc, cut_short=_credentials_cut_short(
            parts.netloc, parts.path, parts.query, parts.fragment))
    _check_redis_db(parts.scheme, parts.path, query)
    if parts.scheme in ("redis", "rediss", "unix") and parts.query:
        _check_redis_query(parts.scheme, parts.query)


_CutShort = Literal["certain", "possible"]
_CUT_SHORT = ("the credentials before '@' hold a character that ends the host part ('/', '?' "
              "or '#'): percent-encode the password ('/' is %2F, '?' %3F, '#' %23), or give it "
              "as a secret instead of in the url")


def _credentials_cut_short(netloc: str, path: str, query: str, fragment: str
                           ) -> _CutShort | None:
    """None, or how sure we are that a password holding "/", "?" or "#" unencoded ended the
    host part early: "certain" for an "@" where none can be (the database path, the fragment,
    a query before any "="), "possible" for an "@" after the host part otherwise (a query
    value may hold one: only a host part that makes no sense then counts)."""
    if "@" in netloc:
        return None
    if "@" in path or "@" in fragment or ("@" in query and "=" not in query.partition("@")[0]):
        return "certain"
    return "possible" if "@" in query else None


def _check_hosts(scheme: str, netloc: str, cut_short: _CutShort | None) -> None:
    # What is left of a password cut short would be read as the host and port, and quoted in
    # the error: say what happened instead, and nothing of the password.
    if cut_short == "certain":
        raise ValueError(_CUT_SHORT)
    try:
        if scheme in _MULTI_HOST_SCHEMES:
            hosts = redis_hosts(netloc, 6379)
        else:
            hosts = [_redis_host(netloc.rpartition("@")[2], in_list=False, default_port=6379)]
    except ValueError:
        if cut_short:
            raise ValueError(_CUT_SHORT) from None
        raise
    if cut_short and not all(host for host, _port in hosts):
        raise ValueError(_CUT_SHORT)


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
