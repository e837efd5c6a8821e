"""`tenantgate envoy-config`: render the Envoy bootstrap that matches a tenantgate config."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import secrets
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tenantgate.cli.errors import non_utf8_option, report_config_error
from tenantgate.cli.numbers import positive_count, positive_seconds, rate
from tenantgate.cli.paths import non_empty_path, non_empty_text
from tenantgate.errors import ConfigError

if TYPE_CHECKING:  # imported when run: envoy-data-plane is an optional extra
    from tenantgate.config.envoy import EnvoyOptions, Rendered

STDOUT = "-"  # --output's name for stdout, as most commands read it


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    parser = subparsers.add_parser(
        "envoy-config", help="render the Envoy bootstrap for a tenantgate config",
        description="Render an Envoy bootstrap (YAML) that agrees with the tenantgate config on "
                    "socket, trusted headers, timeouts and failure mode. sidecar: ext_authz over "
                    "the config's listen.uds (TCP listen.grpc when there is none); front: over "
                    "TCP. Check it with `envoy --mode validate -c FILE`, which checks the "
                    "bootstrap, not the TLS files it reaches through SDS (it exits 0 whatever "
                    "they hold): envoy-config checks those as it renders, but one Envoy cannot "
                    "load when it starts leaves it running and denying every request (503), "
                    "counted in sds.tenantgate-authz-ca.update_rejected or "
                    "sds.tenantgate-authz-client.update_rejected (a renewal it cannot load: "
                    "key_rotation_failed; see docs/envoy.md).")
    # Paths take any bytes a file name may hold; every other option ends up in the bootstrap.
    parser.add_argument("config", type=non_empty_path, metavar="FILE",
                        help="tenantgate YAML config")
    parser.add_argument("--mode", choices=["sidecar", "front"], default="sidecar",
                        help="default: sidecar")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="Envoy's HTTP listener (default 0.0.0.0:15000 sidecar, "
                             "0.0.0.0:8080 front)")
    parser.add_argument("--upstream", metavar="HOST:PORT", default="127.0.0.1:8000",
                        help="the application allowed requests go to (default 127.0.0.1:8000)")
    parser.add_argument("--upstream-protocol", choices=["http1", "http2", "downstream"],
                        default="http1",
                        help="how Envoy speaks to the application: http1 (HTTP/1.1); http2 "
                             "(h2c with prior knowledge: gRPC services, h2c apps); downstream "
                             "(as the client spoke: HTTP/1.1 stays HTTP/1.1, HTTP/2 becomes "
                             "h2c, for an app serving both). gRPC streams longer than "
                             "--route-timeout need --route-timeout 0 (default http1)")
    parser.add_argument("--admin", metavar="HOST:PORT|unix:PATH", default="127.0.0.1:9901",
                        help="Envoy admin listener: a loopback address, or unix:/abs/path for "
                             "a Unix socket of mode 0600 (recommended in sidecar mode, where "
                             "the app shares loopback and could reach the admin's /logging, "
                             "whose debug level prints credentials, and /quitquitquit) "
                             "(default 127.0.0.1:9901)")
    parser.add_argument("--authz", metavar="HOST:PORT",
                        help="front mode (or sidecar without listen.uds): where tenantgate "
                             "listens (default: listen.grpc)")
    parser.add_argument("--authz-tls-ca", type=non_empty_text, metavar="FILE",
                        help="call tenantgate over TLS (its listen.tls), verifying its "
                             "certificate with this PEM CA bundle and its name (--authz-tls-sni, "
                             "or else the --authz host: a DNS SAN for a name, an IP SAN for an "
                             "IP); the one cluster carries Check and ShouldRateLimit. Needs "
                             "--output: Envoy reads the TLS files through SDS files written "
                             "beside it, and reads them again, without a restart, when their "
                             "directory sees a move (a Kubernetes Secret volume's renewal)")
    parser.add_argument("--authz-tls-cert", type=non_empty_text, metavar="FILE",
                        help="with --authz-tls-key: Envoy's client certificate (PEM) for "
                             "tenantgate's mTLS")
    parser.add_argument("--authz-tls-key", type=non_empty_text, metavar="FILE",
                        help="the unencrypted PEM private key of --authz-tls-cert")
    parser.add_argument("--authz-tls-sni", metavar="NAME",
                        help="with --authz-tls-ca: the server name sent and required in "
                             "tenantgate's certificate (default: the --authz host when it is a "
                             "DNS name)")
    parser.add_argument("--authz-plaintext", action="store_true",
                        help="allow a TCP tenantgate beyond loopback (front mode, or a "
                             "sidecar without listen.uds) without TLS, for a mesh that "
                             "encrypts the hop itself (Istio mTLS); without it or "
                             "--authz-tls-ca such a target (--authz or listen.grpc) is refused, "
                             "since every Check carries the client's credential")
    parser.add_argument("--authz-timeout", type=positive_seconds, metavar="SECONDS",
                        help="ext_authz and rate-limit call timeout; refused unless longer than "
                             "the Redis timeouts a Check may wait out (api_keys.redis_timeout + "
                             "quota.redis.timeout) (default: 0.25, or those timeouts + 0.1 "
                             "when longer)")
    parser.add_argument("--route-timeout", type=_seconds_or_zero, default=15.0,
                        metavar="SECONDS",
                        help="how long Envoy waits for the application's whole response, "
                             "counted once the request is complete; 0 = no limit (streaming, "
                             "long polls), though a stream with no bytes either way for 5 "
                             "minutes is still ended (stream_idle_timeout) (default 15)")
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--rate-limit", dest="rate_limit", action="store_true", default=None,
                       help="add Envoy's global rate-limit filter calling ShouldRateLimit "
                            "(default: on when quota is enabled and "
                            "quota.ratelimit_service.config_files is set)")
    limit.add_argument("--no-rate-limit", dest="rate_limit", action="store_false")
    parser.add_argument("--rate-limit-domain", metavar="DOMAIN",
                        help="one of the rate-limit config files' domains (default: the "
                             "first); refused while the rate-limit filter is off")
    parser.add_argument("--no-access-log", action="store_true", help="leave the access log out")
    parser.add_argument("--client-limit", type=rate, metavar="RATE",
                        help="front mode: at most RATE requests (100/s, 6000/min) per client "
                             "address, refused by Envoy with 429 before ext_authz, so a client "
                             "sending a new forged token each time cannot keep tenantgate "
                             "verifying signatures (default: off)")
    parser.add_argument("--client-limit-addresses", type=positive_count, metavar="N",
                        help="with --client-limit: client addresses whose buckets Envoy keeps, "
                             "the least recently seen dropped first (default 10000)")
    parser.add_argument("--xff-num-trusted-hops", type=_hops, default=0, metavar="N",
                        help="behind N proxies (a cloud load balancer; in sidecar mode the "
                             "gateway) that each append the address they saw to "
                             "x-forwarded-for: the client address (--client-limit's buckets, "
                             "x-envoy-external-address) is the Nth entry from the right. With "
                             "N > 0 Envoy also trusts the "
                             "x-forwarded-proto it receives (and sets :scheme from it on "
                             "HTTP/1). Give exactly the proxies really in front, each appending "
                             "to x-forwarded-for and overwriting x-forwarded-proto, and only "
                             "when every request comes through them: a client reaching Envoy "
                             "directly could name any address and claim https (default 0: the "
                             "connection's address and TLS)")
    parser.add_argument("--websocket", action="store_true",
                        help="let WebSocket handshakes (HTTP/1.1 Upgrade: websocket) through to "
                             "the application. Check runs once, on the handshake: everything "
                             "on the connection after the 101 belongs to that tenant, and the "
                             "signed context it carries expires after context.ttl, so Envoy "
                             "ends each upgraded stream context.ttl after it began and the "
                             "client reconnects through a fresh Check (how a revoked key or an "
                             "expired token takes effect). Without it Envoy refuses upgrades "
                             "(403) before Check (default: off; see docs/envoy.md, WebSockets)")
    parser.add_argument("--max-connections", type=positive_count, default=10_000, metavar="N",
                        help="open client connections Envoy accepts, past which it refuses new "
                             "ones (default 10000)")
    parser.add_argument("--output", "-o", type=_output, metavar="FILE",
                        help="write here (- for stdout, the default), replacing FILE in one "
                             "rename (written in place, links followed, when FILE is not a "
                             "regular file or its directory refuses a rename); with "
                             "--authz-tls-ca, a file is needed: the SDS files naming the TLS "
                             "files go beside it, written first, each by a rename, so their "
                             "directory must be writable and each must be absent or a regular "
                             "file (FILE's name without its suffix, then .authz-ca.sds.yaml and "
                             ".authz-client.sds.yaml)")
    parser.set_defaults(handler=_render)


def _render(args: argparse.Namespace) -> int:
    if (option := non_utf8_option(args)) is not None:
        print(f"tenantgate: {option}: not valid UTF-8", file=sys.stderr)
        return 2
    if args.output == STDOUT and args.authz_tls_ca is not None:
        print("tenantgate: --output: - is stdout, and --authz-tls-ca needs a file: Envoy reads "
              "the TLS files through SDS files written beside it", file=sys.stderr)
        return 2
    try:
        from tenantgate.config.envoy import EnvoyConfigError, render_files
    except ModuleNotFoundError as exc:
        print(f"tenantgate: envoy-config needs {exc.name}: pip install 'tenantgate[envoy]'",
              file=sys.stderr)
        return 1
    from tenantgate.config.load import load_config
    from tenantgate.quota import validate as validate_quota

    output = None if args.output == STDOUT else args.output  # None: not given, also stdout
    try:
        # What serve would refuse at start (plans, rate-limit files) is refused here too.
        config = load_config(args.config)
        validate_quota(config)
        options = _options(args, output)  # after the config: its errors are reported first
        # The header names the file; a name that is not UTF-8 is shown escaped, not written.
        source = os.fsencode(args.config).decode(errors="backslashreplace")
        rendered = render_files(config, options, source=source)
    except ConfigError as exc:
        return report_config_error(str(args.config), exc)
    except EnvoyConfigError as exc:
        print(f"tenantgate: {exc}", file=sys.stderr)
        return 2
    if output is None:
        sys.stdout.write(rendered.bootstrap)
        return 0
    return _write_files(str(output), rendered)


def _options(args: argparse.Namespace, output: Path | None) -> EnvoyOptions:
    """The command line as EnvoyOptions, which check it (EnvoyConfigError)."""
    from tenantgate.config.envoy import EnvoyOptions

    return EnvoyOptions(
        mode=args.mode, listen=args.listen, upstream=args.upstream,
        upstream_protocol=args.upstream_protocol, admin=args.admin,
        authz=args.authz, authz_timeout=args.authz_timeout,
        route_timeout=args.route_timeout, rate_limit=args.rate_limit,
        rate_limit_domain=args.rate_limit_domain, access_log=not args.no_access_log,
        client_limit=args.client_limit, client_limit_addresses=args.client_limit_addresses,
        max_connections=args.max_connections, websocket=args.websocket,
        xff_num_trusted_hops=args.xff_num_trusted_hops, authz_tls_ca=args.authz_tls_ca,
        authz_tls_cert=args.authz_tls_cert, authz_tls_key=args.authz_tls_key,
        authz_tls_sni=args.authz_tls_sni, authz_plaintext=args.authz_plaintext,
        output=str(output) if output else None)


def _write_files(output: str, rendered: Rendered) -> int:
    """The SDS files, then the bootstrap to `output`: the exit code, each failure reported."""
    if (refused := _refuse_sds_targets(rendered.sds)) is not None:
        return refused
    # The SDS files first: Envoy refuses to start on a bootstrap naming a missing one.
    for path, body in rendered.sds.items():
        try:
            _replace(path, body)
        except OSError as exc:
            hint = (": its directory must be writable, as Envoy reads an SDS file again only "
                    "when a file is renamed onto it") if exc.errno in _NO_RENAME else ""
            print(f"tenantgate: cannot write {path}: {exc.strerror}{hint}", file=sys.stderr)
            return 1
    try:
        _write_bootstrap(output, rendered.bootstrap)
    except OSError as exc:
        print(f"tenantgate: cannot write {output}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def _refuse_sds_targets(paths: Iterable[str]) -> int | None:
    """The exit code if an SDS file cannot be replaced by a rename, before anything is
    written: Envoy re-reads an SDS file only when a file is renamed onto it, so one that is
    there and is not a regular file (a link, a FIFO) is refused."""
    for path in paths:
        try:
            renamable = _renamable(path)
        except OSError as exc:
            print(f"tenantgate: cannot write {path}: {exc.strerror}", file=sys.stderr)
            return 1
        if not renamable:
            print(f"tenantgate: --output: cannot write {path} beside it: not a regular "
                  f"file, and Envoy reads an SDS file again only when a file is renamed onto "
                  f"it: remove it", file=sys.stderr)
            return 2
    return None


def _output(text: str) -> Path | str:
    """--output: the file, or `-` (kept as text: Path reads `./-` as `-` too) for stdout. A
    directory is refused here, before anything is written: the SDS files, named after it,
    would go to its parent, and then the bootstrap could not be written."""
    if text == STDOUT:
        return text
    path = non_empty_path(text)
    # Path drops a trailing / and a trailing /., so the text is looked at, not the Path.
    if text.endswith("/") or os.path.basename(text) in (".", "..") or os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} names a directory: give the file to write "
                                         f"the bootstrap to")
    return path


# Where a rename fails and a write in place may not: a single-file bind mount (EBUSY), a
# writable file in a read-only (EACCES) or sticky (EPERM) directory, a read-only mount (EROFS).
_NO_RENAME = frozenset({errno.EBUSY, errno.EACCES, errno.EPERM, errno.EROFS})


def _renamable(path: str) -> bool:
    """Whether `path` may be replaced by a rename: absent, or a regular file. A rename onto a
    link, a FIFO or a device would replace it (`-o /dev/stdout` printing nothing)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return True


def _write_bootstrap(path: str, body: str) -> None:
    """The bootstrap by a rename where it can be (never half written), else in place: Envoy
    reads it only at start, and a link, a FIFO, a device or a file it cannot rename over was
    written in place before renames, following links."""
    if _renamable(path):
        try:
            _replace(path, body)
            return
        except OSError as exc:
            if exc.errno not in _NO_RENAME:
                raise
    with open(path, "w", encoding="utf-8") as file:
        file.write(body)


def _replace(path: str, body: str) -> None:
    """Write `path` through a new file beside it renamed over it: a running Envoy reads an
    SDS file again when a file is moved onto it (not when it is written in place), and never
    sees one half written. The new file keeps a replaced file's mode, owner and group (an SDS
    file readable by Envoy's group only stays so)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        previous: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        previous = None
    descriptor, temporary = _create_beside(directory)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            _take_over(file.fileno(), previous, path)
            file.write(body)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _create_beside(directory: str) -> tuple[int, str]:
    """A new empty file in `directory`, created as a plain write creates one: 0666 less the
    umask, and the directory's default ACL, applied by the kernel (Envoy may run as another
    user than this command). A short name: the target's own name plus a suffix could pass
    NAME_MAX."""
    while True:
        temporary = os.path.join(directory, f".tg-{secrets.token_hex(6)}")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue


def _take_over(descriptor: int, previous: os.stat_result | None, path: str) -> None:
    if previous is None:
        return
    # Owner and group first: a chown clears set-id bits the mode then restores. Best effort:
    # only root may give a file away (another user keeps the group when it is one of theirs),
    # and an owner this user namespace cannot map is EINVAL.
    if (previous.st_uid, previous.st_gid) != (os.geteuid(), os.getegid()):
        try:
            os.fchown(descriptor, previous.st_uid, previous.st_gid)
        except OSError:
            try:
                os.fchown(descriptor, -1, previous.st_gid)
            except OSError:
                # Written anyway, but a reader allowed by the old group (Envoy's) may be
                # refused now: say so, naming what could not be given back.
                print(f"tenantgate: warning: {path}: replaced with this user's owner and "
                      f"group, not its own ({previous.st_uid}:{previous.st_gid}): check "
                      f"that Envoy can still read it", file=sys.stderr)
    os.fchmod(descriptor, stat.S_IMODE(previous.st_mode))


def _hops(text: str) -> int:
    # Digits only, as numbers.positive_count reads them: int() takes "-1", "+1" and " 1".
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"must be a whole number of proxies, 0 or more, "
                                         f"got {text!r}")
    return int(text)


def _seconds_or_zero(text: str) -> float:
    """Seconds as --authz-timeout takes them, or 0 (Envoy's "no timeout")."""
    try:
        if float(text) == 0:
            return 0.0
    except ValueError:
        pass  # positive_seconds says what is wrong
    return positive_seconds(text)
