"""Process lifecycle: gRPC listeners (TCP and UDS), health, metrics HTTP, SIGTERM drain,
SIGHUP reload."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tenantgate.authz import SERVICE as AUTHZ_SERVICE
from tenantgate.authz import AuthorizationServicer
from tenantgate.bind_error import bind_error
from tenantgate.config.load import load_config
from tenantgate.config.tls import LISTENERS, RotatingCredentials
from tenantgate.errors import ConfigError
from tenantgate.health_listener import HealthListenFailed, start_health_listener
from tenantgate.observe import metrics
from tenantgate.observe.loop_lag import watch_loop_lag
from tenantgate.observe.metrics_listener import MetricsServer, start_metrics_listener
from tenantgate.observe.throttle import Throttle
from tenantgate.runtime import Runtime
from tenantgate.unix_socket import BoundSocket, SocketInUse, remove_stale_socket

if TYPE_CHECKING:
    from tenantgate.admin.server import AdminListener
    from tenantgate.config.model import Config

log = logging.getLogger("tenantgate")
SERVICES = (AUTHZ_SERVICE, "envoy.service.ratelimit.v3.RateLimitService")
# Largest request message (gRPC's default is 4 MiB). A Check from an Envoy with its default
# 60 KiB header limit (max_request_headers_kb) is at most about 125 KiB: the headers, and the
# path and host again in their own fields. 1 MiB leaves room for a raised limit and bounds
# what parsing one ShouldRateLimit call costs.
MAX_RECEIVE_BYTES = 1024 * 1024
# How often the files of listen.tls and admin.tls are read again (SIGHUP reads them at once): a
# renewed certificate is served within this, well inside any renewal margin (cert-manager renews
# a third of the lifetime early; kubelet takes up to a minute or two to update a mounted Secret).
TLS_REREAD_SECONDS = 60.0


class StartupError(Exception):
    """The server could not start (a port in use, a socket path not writable)."""


class App:
    """Owns the gRPC server and the current Runtime; swaps the Runtime on reload."""

    def __init__(self, config_path: str, config: Config | None = None) -> None:
        self.config_path = config_path
        self.runtime = Runtime.build(config if config is not None else load_config(config_path))
        metrics.signing_with(self.runtime.config.context.active_key)
        metrics.CONFIG_LAST_RELOAD_OK.set(1)
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.admin: AdminListener | None = None
        self._stopping = asyncio.Event()
        self._retired: set[asyncio.Task[None]] = set()  # closing a runtime a reload replaced
        self._drained = asyncio.Event()  # set by stop() once the listeners have drained
        # Start and reloads run one at a time, in order: a second SIGHUP during a slow reload
        # (JWKS fetches) would otherwise finish first and be overwritten by the older file.
        self._reloading = asyncio.Lock()
        self._stopped = False
        # Whether start() reached SERVING: only then does stop() keep answering for
        # shutdown_delay and drain for drain_timeout (a failed start served nobody).
        self._served = False
        # What start() bound: a reload cannot change it, so stop() must not read it from a
        # reloaded config (it would unlink another path and leave our socket behind).
        self._listen = self.runtime.config.listen
        self._admin_config = self.runtime.config.admin
        # What stop() unlinks: the socket we bound (by inode), so a socket a successor bound
        # at the same path while this one drained is left alone.
        self._bound_uds: BoundSocket | None = None
        self._lag_watch: asyncio.Task[None] | None = None
        self._tls: RotatingCredentials | None = None  # listen.tls as start() read it
        # Every TLS listener's credentials, listen.tls's and admin.tls's: their files are read
        # again every TLS_REREAD_SECONDS and on SIGHUP.
        self._rotating: list[RotatingCredentials] = []
        self._tls_watch: asyncio.Task[None] | None = None
        self._health_listener: grpc.aio.Server | None = None  # listen.health's server
        self._metrics_server: MetricsServer | None = None  # listen.metrics's, on its own thread
        # One traceback a minute for a recurring bug, per listener (by key path): a shared one
        # went to listen.tls, read first, every minute, and a failing admin.tls went unsaid.
        self._tls_failing: defaultdict[str, Throttle] = defaultdict(lambda: Throttle(60.0))

    def current(self) -> Runtime:
        """The runtime a new call takes as its snapshot; the call pins it (Runtime.pin) so a
        reload closes it only after the call ends."""
        return self.runtime

    async def start(self) -> None:
        try:
            async with self._reloading:
                await self._start()
        except BaseException:
            await self.stop()  # a half-started app must leave no server or store connection
            raise

    async def _start(self) -> None:
        await self.runtime.start()
        cfg = self._listen = self.runtime.config.listen
        self._admin_config = self.runtime.config.admin
        if cfg.tls is not None:  # read and checked before any listener: a bad file is named
            self._tls = RotatingCredentials(cfg.tls, "listen.tls")
            self._rotating.append(self._tls)
        options = [("grpc.so_reuseport", 0),
                   ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                   # Envoy pings an idle connection over TCP every 10 s (its keepalive in
                   # config/envoy/bootstrap.py) to find a dead peer; gRPC's default policy
                   # answers the third ping with GOAWAY, and an idle Envoy reconnected every
                   # ~30 s.
                   ("grpc.keepalive_permit_without_calls", 1),
                   ("grpc.http2.min_ping_interval_without_data_ms", 5000)]
        self.server = grpc.aio.server(options=options,
                                      maximum_concurrent_rpcs=cfg.max_concurrent_rpcs)
        AuthorizationServicer(self.current).add_to_server(self.server)  # pins its own snapshot
        _add_rate_limit_service(self.server, self.current)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        # The admin API, on its own listener, first: one that cannot bind then fails the start
        # before a Check is answered, and before the Check port is bound (gRPC frees a port
        # only by stopping a started server: a bound, never-started one holds it for good).
        if self.runtime.config.admin is not None:
            from tenantgate.admin.server import AdminListenFailed, start_admin
            try:
                self.admin = await start_admin(self.current, self.runtime.config.admin)
            except AdminListenFailed as exc:
                raise StartupError(str(exc)) from None
            if self.admin.tls is not None:
                self._rotating.append(self.admin.tls)
        if cfg.health:  # before the Check port too, for the same reason
            await self._start_health_listener(cfg.health)
        if cfg.metrics:  # and the metrics port
            try:
                self._metrics_server = start_metrics_listener(cfg.metrics)
            except OSError as exc:
                raise StartupError(f"listen.metrics {cfg.metrics}: {exc.strerror}") from None
        self._bind(cfg.grpc, cfg.uds)
        await self.server.start()
        # Everything alive now lives as long as the process: keep the cyclic GC from
        # re-scanning it on every full collection under load.
        gc.collect()
        gc.freeze()
        self._lag_watch = asyncio.get_running_loop().create_task(watch_loop_lag())
        for tls in self._rotating:  # at 0 from the start: alerts use increase()
            metrics.TLS_REREAD_FAILURES.labels(LISTENERS[tls.at])
        if self._rotating:
            self._tls_watch = asyncio.get_running_loop().create_task(self._reread_tls_every())
        await self._set_serving(health_pb2.HealthCheckResponse.SERVING)
        self._served = True
        log.info("serving", extra={"grpc": cfg.grpc, "uds": cfg.uds, "metrics": cfg.metrics,
                                   "health": cfg.health})

    async def _start_health_listener(self, address: str) -> None:
        # gRPC's health servicer starts out SERVING: the probe port must not say so before
        # listen.grpc serves, or Kubernetes would send the pod Checks it cannot answer yet.
        await self._set_serving(health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            self._health_listener = await start_health_listener(self.health, address)
        except HealthListenFailed as exc:
            raise StartupError(str(exc)) from None

    def _bind(self, tcp: str | None, uds: str | None) -> None:
        from tenantgate.config.addresses import socket_path_problem

        assert self.server is not None
        targets = []
        if tcp:
            targets.append((f"listen.grpc {tcp}", tcp))
        if uds:
            try:
                remove_stale_socket(uds, "listen.uds")
            except SocketInUse as exc:
                raise StartupError(str(exc)) from None
            if (problem := socket_path_problem(uds)) is not None:  # as check-config says
                raise StartupError(f"listen.uds: cannot listen on {uds}: {problem}")
            targets.append((f"listen.uds {uds}", f"unix:{uds}"))
        for what, address in targets:
            try:
                if address == tcp and self._tls is not None:
                    port = self.server.add_secure_port(address, self._tls.credentials)
                else:
                    port = self.server.add_insecure_port(address)
            except RuntimeError:
                port = 0
            if port == 0:
                cause = bind_error(address) if address == tcp else None
                raise StartupError(f"{what}: cannot listen: {cause}" if cause else
                                   f"{what}: cannot listen (address in use, or no such "
                                   "directory, or not allowed)")
        if uds:
            self._bound_uds = BoundSocket.of(uds)

    async def _set_serving(self, status: int) -> None:
        for service in ("", *SERVICES):
            await self.health.set(service, status)

    async def reload(self) -> bool:
        """Build a whole new Runtime; a config that cannot be used keeps the running one and
        says why."""
        async with self._reloading:
            if self._stopped:
                log.warning("reload ignored: shutting down")
                return False
            await self._reread_tls()  # the files at the paths start() read, as listen is
            return await self._reload()

    async def _reload(self) -> bool:
        new = await self._build_and_start()
        if new is not None and self._stopped:  # stop() began meanwhile and closes what it has
            await self._close_quietly(new)
            return False
        if new is None:
            metrics.CONFIG_RELOADS.labels("rejected").inc()
            metrics.CONFIG_LAST_RELOAD_OK.set(0)
            return False
        if new.config.listen != self._listen:
            log.warning("reload: listen settings changed; they take effect at the next restart")
        if new.config.admin != self._admin_config:  # its token and TLS files too
            log.warning("reload: admin settings changed; they take effect at the next restart")
        old, self.runtime = self.runtime, new
        metrics.CONFIG_RELOADS.labels("ok").inc()
        metrics.CONFIG_LAST_RELOAD_OK.set(1)
        metrics.signing_with(new.config.context.active_key)
        log.info("config reloaded")
        task = asyncio.ensure_future(self._close_later(old))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)
        return True

    async def _reread_tls_every(self) -> None:
        # A renewed certificate is served without a SIGHUP: cert-manager and kubelet send none.
        while True:
            await asyncio.sleep(TLS_REREAD_SECONDS)
            await self._reread_tls()

    async def _reread_tls(self) -> None:
        # An unusable set is logged and the served one kept (reread). Anything else is a bug,
        # and must neither end the re-reading for good (the served certificate would expire
        # under a long-lived process), nor skip the other listener's files, nor block the
        # config reload that follows a SIGHUP.
        for tls in self._rotating:
            try:
                await asyncio.to_thread(tls.reread)
                failed = tls.failed  # an unusable set, said by reread
            except Exception:
                failed = True
                metrics.INTERNAL_ERRORS.inc()
                if self._tls_failing[tls.at].ready():
                    log.exception("%s: reading the certificate files again failed; keeping "
                                  "the certificate served, retrying", tls.at)
            if failed:  # either way the old certificate is served, and will expire
                metrics.TLS_REREAD_FAILURES.labels(LISTENERS[tls.at]).inc()

    async def _build_and_start(self) -> Runtime | None:
        try:
            new = Runtime.build(load_config(self.config_path, pipe_ok=False),
                                replacing=self.runtime)
        except ConfigError as exc:  # the operator's mistake: the message says it all
            log.error("reload rejected, keeping the running config:\n%s", exc)
            return None
        # Bugs, not rejected configs (validation let through a value a client library
        # refuses; start() degrades, it does not fail): the reload is rejected all the same,
        # and they count as internal errors, which alert where a rejected reload does not.
        except Exception:
            metrics.INTERNAL_ERRORS.inc()
            log.exception("reload rejected, keeping the running config: building it failed")
            return None
        try:
            await new.start()
        except Exception:
            metrics.INTERNAL_ERRORS.inc()
            log.exception("reload rejected, keeping the running config: starting it failed")
            await self._close_quietly(new)  # it may hold a reference on a shared store
            return None
        return new

    async def _close_later(self, old: Runtime) -> None:
        # Calls in flight still hold the old snapshot: close it once the last has finished
        # (not after a fixed time: a Check waiting on a slow IdP can outlive drain_timeout, and
        # closing its key sets under it left it unanswered), or once stop() has drained.
        if old.in_flight:
            old.idle.clear()
            await _first_of(old.idle, self._drained)
        await self._close_quietly(old)

    @staticmethod
    async def _close_quietly(runtime: Runtime) -> None:
        try:
            await runtime.close()
        except Exception:  # a bug: its connections or tasks may be left behind
            metrics.INTERNAL_ERRORS.inc()
            log.exception("closing a runtime failed")

    def request_stop(self) -> None:
        self._stopping.set()

    async def run_until_stopped(self) -> None:
        await self._stopping.wait()
        await self.stop()

    async def stop(self) -> None:
        self._stopped = True
        # NOT_SERVING first, so load balancers and Envoy health checks move away, then drain.
        await self._set_serving(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._served and self._listen.shutdown_delay > 0 and self.server is not None:
            # gRPC's stop() refuses new calls at once: keep answering while callers notice.
            await asyncio.sleep(self._listen.shutdown_delay)
        grace = self._listen.drain_timeout if self._served else 0
        if self.server is not None:
            await self.server.stop(grace)
        if self.admin is not None:
            await self.admin.stop(grace)
        if self._health_listener is not None:  # it said NOT_SERVING while the others drained
            await self._health_listener.stop(None)
        if self._metrics_server is not None:  # scraped through the drain, closed after it
            metrics_server, self._metrics_server = self._metrics_server, None
            try:
                # Ends its serve_forever thread, which notices within its 0.5 s poll.
                await asyncio.to_thread(metrics_server.shutdown)
            finally:
                metrics_server.server_close()  # the port, even when the stop is cancelled
        # Retired runtimes still hold batched hits to charge and store references: close them.
        self._drained.set()
        await asyncio.gather(*self._retired)
        await self.runtime.close()
        bound, self._bound_uds = self._bound_uds, None
        if bound:
            bound.unlink_if_ours()
        for watch in (self._lag_watch, self._tls_watch):
            if watch is not None:
                watch.cancel()
                try:
                    await watch
                except asyncio.CancelledError:
                    pass
                except Exception:  # it had ended on a bug: that must not stop the stopping
                    log.exception("a background task had failed")
        self._lag_watch = self._tls_watch = None


async def _first_of(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def _add_rate_limit_service(server: grpc.aio.Server, get_runtime: Callable[[], Runtime]
                            ) -> None:
    try:
        from tenantgate.quota import rls
    except ImportError:
        return
    rls.add_to_server(server, get_runtime)  # pins its own snapshot, as Check


async def serve(config_path: str, config: Config | None = None) -> None:
    with _unforeseen_is_startup_error():
        app = App(config_path, config)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, app.request_stop)
    loop.add_signal_handler(signal.SIGINT, app.request_stop)
    reloads: set[asyncio.Future[bool]] = set()  # the loop keeps only weak references to tasks

    def reload_on_sighup() -> None:
        task = asyncio.ensure_future(app.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_on_sighup)
    with _unforeseen_is_startup_error():
        await app.start()
    await app.run_until_stopped()


@contextlib.contextmanager
def _unforeseen_is_startup_error() -> Iterator[None]:
    # A client library refusing a value check-config let through (redis-py's RedisError for
    # a bad URL option), or a bug: `serve` says it in one line, the traceback at DEBUG.
    try:
        yield
    except (ConfigError, StartupError):
        raise
    except Exception as exc:
        log.debug("start-up failed", exc_info=True)
        said = " ".join(str(exc).split())
        raise StartupError(f"{type(exc).__name__}: {said}" if said
                           else type(exc).__name__) from exc


def run(config_path: str, use_uvloop: bool | None = None) -> None:
    """Run the server until SIGTERM/SIGINT; uvloop takes about a fifth off gRPC's CPU cost."""
    with _unforeseen_is_startup_error():
        config = load_config(config_path)  # once, so its warnings are logged once
    if use_uvloop is None:
        use_uvloop = config.listen.uvloop
    loop_factory = None
    if use_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(config_path, config))
