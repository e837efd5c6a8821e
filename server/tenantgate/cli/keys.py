"""`tenantgate keys`: create, list, rotate and revoke API keys, and read usage, through the
admin API. The admin token comes from an environment variable or a file, never the command line."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from pydantic import TypeAdapter, ValidationError

from tenantgate.cli.errors import non_utf8_option
from tenantgate.cli.paths import non_empty_path
from tenantgate.config.addresses import check_host_port, check_unix_url_absolute
from tenantgate.config.apikeys import (
    MAX_LIFETIME_SECONDS,
    NO_OVERLAP,
    check_ipv6_bracketed,
    is_local_address,
)
from tenantgate.config.files import SECRET_FILE_MAX_BYTES, read_file_or_pipe
from tenantgate.config.tls import MAX_PEM_BYTES, is_key_of, unencrypted_private_key
from tenantgate.config.types import Duration, is_duration_text

if TYPE_CHECKING:  # imported lazily at run time, so `--help` works without the generated code
    from tenantgate._gen.tenantgate.admin.v1.apikeys_pb2 import ApiKey
    from tenantgate._gen.tenantgate.admin.v1.apikeys_pb2_grpc import ApiKeyAdminStub

_DURATION: TypeAdapter[float] = TypeAdapter(Duration)
_TIMEOUT = 10.0
_OPTION_NAMES = {"key_id": "KEY_ID", "scopes": "--scope"}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    parser = subparsers.add_parser(
        "keys", help="manage API keys through the admin API",
        description="Create, list, rotate and revoke API keys and read usage, via the admin "
                    "API (config `admin`). The admin token, unless the API takes a client "
                    "certificate alone, is read from --token-env or --token-file; it is never "
                    "accepted on the command line.")
    parser.add_argument("--admin", default=os.environ.get("TENANTGATE_ADMIN", "127.0.0.1:9002"),
                        metavar="ADDRESS", help="admin API address (default: $TENANTGATE_ADMIN "
                        "or 127.0.0.1:9002; unix:PATH for a socket)")
    parser.add_argument("--token-env", metavar="NAME",
                        help="environment variable holding the admin token")
    parser.add_argument("--token-file", type=non_empty_path, metavar="FILE",
                        help="file, or pipe (<(vault ...)), holding the token")
    parser.add_argument("--ca", type=non_empty_path, metavar="FILE",
                        help="CA certificate: use TLS and verify the server with it (needed "
                        "for an address other than loopback or unix:PATH)")
    parser.add_argument("--cert", type=non_empty_path, metavar="FILE",
                        help="client certificate (mTLS)")
    parser.add_argument("--key", type=non_empty_path, metavar="FILE",
                        help="client private key (mTLS)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    create = sub.add_parser("create", help="create a key; its secret is printed once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="", help="a label for people, e.g. 'billing-sync'")
    create.add_argument("--scope", action="append", default=[], dest="scopes",
                        help="a scope the key grants (repeatable)")
    create.add_argument("--ttl", help="lifetime such as 90d or 12h, at least 1s and at most "
                        "3650d; fractions of a second round up (default: no expiry)")
    create.set_defaults(handler=_command(_create))

    listing = sub.add_parser("list", help="list a tenant's keys (never their secrets)")
    listing.add_argument("--tenant", required=True)
    listing.add_argument("--all", action="store_true",
                         help="include keys that no longer work: revoked and expired ones")
    listing.set_defaults(handler=_command(_list))

    rotate = sub.add_parser("rotate", help="new key now; the old one expires after an overlap")
    rotate.add_argument("key_id", metavar="KEY_ID")
    rotate.add_argument("--overlap", help="how long the old key keeps working, e.g. 1h, at "
                        "most 3650d; 0: it stops working now (default: the server's "
                        "api_keys.rotate_overlap)")
    rotate.set_defaults(handler=_command(_rotate))

    revoke = sub.add_parser("revoke", help="revoke a key on every replica")
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(handler=_command(_revoke))

    usage = sub.add_parser("usage", help="request counts of a tenant and of each of its keys")
    usage.add_argument("--tenant", required=True)
    usage.set_defaults(handler=_command(_usage))


class UsageError(Exception):
    """A bad option value: printed as one line, exit code 2."""


Metadata = list[tuple[str, str]]  # gRPC call metadata: the admin token, if any
Action = Callable[[argparse.Namespace, "ApiKeyAdminStub", Metadata], int]


def _command(action: Action) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2_grpc as pb_grpc

        try:
            if (option := non_utf8_option(args, _OPTION_NAMES)) is not None:
                raise UsageError(f"{option}: not valid UTF-8")
            token = _token(args)
            metadata = [("authorization", f"Bearer {token}")] if token is not None else []
            with _channel(args) as channel:
                return action(args, pb_grpc.ApiKeyAdminStub(channel), metadata)
        except UsageError as exc:
            print(f"tenantgate keys: {exc}", file=sys.stderr)
            return 2
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            details = exc.details() if hasattr(exc, "details") else ""
            print(f"tenantgate keys: {code}: {details}", file=sys.stderr)
            return 1
    return handler


def _token(args: argparse.Namespace) -> str | None:
    """The admin token, or None for an admin API that knows callers by their certificate
    alone (config `admin.tls.client_ca` without a token)."""
    if args.token_env is not None and args.token_file is not None:
        raise UsageError("give one of --token-env NAME or --token-file FILE, not both")
    if args.token_env is None and args.token_file is None:
        if args.cert is not None:
            return None
        raise UsageError("give one of --token-env NAME or --token-file FILE (or --cert and "
                         "--key, for an admin API that takes a client certificate alone)")
    if args.token_env is not None:
        token = os.environ.get(args.token_env, "").strip()
        if not token:
            raise UsageError(f"environment variable {args.token_env} is not set")
        return _header_safe(token, f"environment variable {args.token_env}")
    data = _read(args.token_file, SECRET_FILE_MAX_BYTES, "not an admin token")
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UsageError(f"{args.token_file}: the token is not valid UTF-8") from None
    if not token:
        raise UsageError(f"{args.token_file} is empty")
    return _header_safe(token, str(args.token_file))


def _header_safe(token: str, source: str) -> str:
    # gRPC metadata values are printable ASCII; anything else fails inside grpc.
    if not (token.isascii() and token.isprintable()):
        raise UsageError(f"{source}: the admin token must be printable ASCII")
    return token


def _read(path: Path, limit: int, too_large: str) -> bytes:
    try:  # a pipe is welcome too: --token-file <(vault read ...)
        return read_file_or_pipe(path, limit, too_large)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _read_pem(path: Path | None, what: str) -> bytes | None:
    return None if path is None else _read(path, MAX_PEM_BYTES, f"not a {what}")


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if args.admin in ("unix:", "unix://"):  # gRPC: "UNAVAILABLE: empty address list", exit 1
        raise UsageError(f"--admin unix:PATH needs a path, got {args.admin!r}")
    try:  # else gRPC exits 1 with its own error lines; the config refuses it too
        check_unix_url_absolute(args.admin, "a relative path")
    except ValueError as exc:
        raise UsageError(f"--admin {exc}") from None
    if not args.admin.startswith("unix:"):
        # gRPC takes any port number and wraps it: 99999 would send the token to port 34463.
        try:
            check_host_port(args.admin)
        except ValueError:
            raise UsageError(f"--admin {args.admin}: must be host:port with a port from 1 to "
                             "65535, or unix:PATH") from None
        if int(args.admin.rpartition(":")[2]) == 0:
            raise UsageError(f"--admin {args.admin}: port 0 is not an address to connect to")
        try:
            check_ipv6_bracketed(args.admin)  # ::1:9002 would go to another host, port 443
        except ValueError as exc:
            raise UsageError(f"--admin {exc}") from None
    if args.ca is None and args.cert is None and args.key is None:
        # The token goes in the first request, before the server says anything: in clear
        # text it may go only where the admin API itself may listen without TLS.
        if not is_local_address(args.admin):
            raise UsageError(f"--admin {args.admin}: without --ca the admin token would cross "
                             "the network in clear text; give --ca FILE (TLS), or a loopback "
                             "address or unix:PATH")
        return grpc.insecure_channel(args.admin)
    if (args.cert is None) != (args.key is None):
        raise UsageError("--cert and --key go together")
    creds = grpc.ssl_channel_credentials(*_tls_files(args))
    return grpc.secure_channel(args.admin, creds)


def _tls_files(args: argparse.Namespace) -> tuple[bytes | None, bytes | None, bytes | None]:
    """--ca, --key and --cert, checked: gRPC takes any bytes and then only fails to connect,
    naming no file (a swapped --cert and --key is the usual mistake)."""
    from cryptography import x509

    ca, cert = _read_pem(args.ca, "PEM certificate"), _read_pem(args.cert, "PEM certificate")
    key = _read_pem(args.key, "PEM private key")
    chains: dict[str, list[x509.Certificate]] = {}
    for option, path, data in (("--ca", args.ca, ca), ("--cert", args.cert, cert)):
        try:
            chains[option] = x509.load_pem_x509_certificates(data) if data is not None else []
        except ValueError:  # an empty file too
            raise UsageError(f"{option} {path}: not a PEM certificate") from None
    if key is not None:
        if (private := unencrypted_private_key(key)) is None:
            raise UsageError(f"--key {args.key}: not a PEM private key (unencrypted)")
        if not is_key_of(private, chains["--cert"][0].public_key()):
            raise UsageError(f"--key {args.key}: not the private key of --cert {args.cert}")
    return ca, key, cert


def _seconds(text: str, option: str) -> int:
    """Whole seconds, rounded up: a truncated 500ms would be 0, which the API reads as
    "no expiry" or "the default overlap"."""
    try:
        seconds = _DURATION.validate_python(text)
    except ValidationError:
        if not is_duration_text(text):
            raise UsageError(f"{option}: must be a duration such as 30m, 12h or 90d") from None
        seconds = math.inf  # digits past a float's range: inf, which Duration refuses
    if seconds > MAX_LIFETIME_SECONDS:  # also keeps it within the request's int64
        raise UsageError(f"{option}: at most 3650d (10 years)")
    return math.ceil(seconds)


def _ttl(text: str | None) -> int:
    if text is None:
        return 0  # no expiry
    seconds = _seconds(text, "--ttl")
    if seconds == 0:
        raise UsageError("--ttl: must be at least 1s (leave --ttl out for a key that never "
                         "expires)")
    return seconds


def _overlap(text: str | None) -> int:
    if text is None:
        return 0  # the server's default
    return _seconds(text, "--overlap") or NO_OVERLAP


def _when(stamp: int) -> str:
    if not stamp:
        return "-"
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
    except (OverflowError, OSError, ValueError):  # beyond what the platform's gmtime takes
        return str(stamp)


def _show(message: Message) -> None:
    print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2))


def _line(key: ApiKey) -> str:
    state = "revoked" if key.revoked else ("expired" if 0 < key.expires_at <= time.time()
                                           else "active")
    return (f"{key.key_id}  {state:8} tenant={key.tenant} name={key.name!r} "
            f"scopes={','.join(key.scopes) or '-'} created={_when(key.created_at)} "
            f"expires={_when(key.expires_at)} last_used={_when(key.last_used_at)}")


def _secret_once(api_key: str) -> None:
    print(api_key)
    print("(the key above is shown once: store it now; it cannot be retrieved later)",
          file=sys.stderr)


def _create(args: argparse.Namespace, stub: ApiKeyAdminStub, metadata: Metadata) -> int:
    from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2 as pb

    reply = stub.CreateKey(pb.CreateKeyRequest(
        tenant=args.tenant, name=args.name, scopes=args.scopes,
        ttl_seconds=_ttl(args.ttl)), metadata=metadata, timeout=_TIMEOUT)
    if args.json:
        _show(reply)
        return 0
    _secret_once(reply.api_key)  # first: nothing after it may lose the secret
    print(_line(reply.key), file=sys.stderr)
    return 0


def _list(args: argparse.Namespace, stub: ApiKeyAdminStub, metadata: Metadata) -> int:
    from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2 as pb

    listed = pb.ListKeysResponse()
    token = ""
    while True:  # page by page: one response is bounded, a tenant's keys are not
        reply = stub.ListKeys(pb.ListKeysRequest(tenant=args.tenant, include_revoked=args.all,
                                                 page_token=token),
                              metadata=metadata, timeout=_TIMEOUT)
        if not args.json:
            for key in reply.keys:
                print(_line(key))
        listed.keys.extend(reply.keys)
        if not reply.next_page_token or reply.next_page_token == token:
            break
        token = reply.next_page_token
    if args.json:
        _show(listed)
    return 0


def _rotate(args: argparse.Namespace, stub: ApiKeyAdminStub, metadata: Metadata) -> int:
    from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2 as pb

    reply = stub.RotateKey(pb.RotateKeyRequest(
        key_id=args.key_id, overlap_seconds=_overlap(args.overlap)),
        metadata=metadata, timeout=_TIMEOUT)
    if args.json:
        _show(reply)
        return 0
    _secret_once(reply.api_key)  # first: nothing after it may lose the secret
    print(f"old: {_line(reply.old_key)}", file=sys.stderr)
    print(f"new: {_line(reply.new_key)}", file=sys.stderr)
    return 0


def _revoke(args: argparse.Namespace, stub: ApiKeyAdminStub, metadata: Metadata) -> int:
    from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2 as pb

    reply = stub.RevokeKey(pb.RevokeKeyRequest(key_id=args.key_id), metadata=metadata,
                           timeout=_TIMEOUT)
    if args.json:
        _show(reply)
    else:
        print(_line(reply.key))
    return 0


def _usage(args: argparse.Namespace, stub: ApiKeyAdminStub, metadata: Metadata) -> int:
    from tenantgate._gen.tenantgate.admin.v1 import apikeys_pb2 as pb

    reply = stub.GetUsage(pb.GetUsageRequest(tenant=args.tenant), metadata=metadata,
                          timeout=_TIMEOUT)
    if args.json:
        _show(reply)
        return 0
    print(f"tenant={reply.tenant} requests={reply.requests} "
          f"revoked_attempts={reply.revoked_attempts}")
    for key in reply.keys:
        print(f"  {key.key_id}  requests={key.requests}")
    return 0
