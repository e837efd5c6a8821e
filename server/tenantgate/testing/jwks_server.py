"""A real local HTTP server publishing a JWKS (and an OIDC discovery document) for tests:
keys can be rotated, the server can fail or hold its answers on demand, and every fetch is
counted (on arrival, and once answered)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JwksServer:
    """Serves /jwks.json and /.well-known/openid-configuration on 127.0.0.1."""

    def __init__(self, keys: list[dict[str, Any]] | None = None, max_age: int | None = 300) -> None:
        self.keys = list(keys or [])
        self.max_age = max_age
        self.failing = False  # answer 503 while True
        self.delay = 0.0  # seconds before each answer: a slow IdP
        self.fetches = 0  # GETs of /jwks.json answered
        self.begun = 0  # GETs of /jwks.json that have arrived, held or not
        self._lock = threading.Lock()
        self._arrivals = threading.Condition()
        self._released = threading.Event()  # cleared by hold(): answers wait until release()
        self._released.set()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval (0.5 s by default).
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,),
                                        daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/jwks.json"

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def hold(self) -> None:
        """Every request from now on waits, after it is counted in `begun`, until release():
        a test can act while a fetch is known to be in flight, whatever the machine's speed."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def wait_begun(self, count: int, timeout: float) -> bool:
        """Blocks until `begun` reaches `count` (True) or `timeout` seconds pass (False): the
        timeout is only a bound for a test that would otherwise hang. From async code, run it
        with asyncio.to_thread."""
        with self._arrivals:
            return self._arrivals.wait_for(lambda: self.begun >= count, timeout)

    def stop(self) -> None:
        self.release()  # held handlers answer and end
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/jwks.json":
                    with server._arrivals:
                        server.begun += 1
                        server._arrivals.notify_all()
                server._released.wait()
                time.sleep(server.delay)
                with server._lock:
                    if self.path == "/jwks.json":
                        server.fetches += 1
                    body, status = server._respond(self.path)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                if server.max_age is not None and status == 200:
                    self.send_header("cache-control", f"public, max-age={server.max_age}")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet in tests

        return Handler

    def _respond(self, path: str) -> tuple[bytes, int]:
        if self.failing:
            return b'{"error":"unavailable"}', 503
        if path == "/jwks.json":
            return json.dumps({"keys": self.keys}).encode(), 200
        if path == "/.well-known/openid-configuration":
            return json.dumps({"issuer": self.base_url, "jwks_uri": self.jwks_url}).encode(), 200
        return b"{}", 404
