"""tenantgate Apps started in a test's own event loop, on fresh ports, and stopped after (here,
not in tenantgate.testing: nothing in the package but the CLI imports the App)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tenantgate.app import App
from tenantgate.testing.ports import on_fresh_ports_async


async def app_on_fresh_ports(write_config: Callable[[], Path | str]) -> App:
    """An App serving the config `write_config()` writes, which must pick new ports on every
    call: it is called again while a start fails because a port was taken (a failed start
    stops whatever it had started)."""
    async def attempt() -> App:
        app = App(str(write_config()))
        await app.start()
        return app

    return await on_fresh_ports_async(attempt)


class StartedApps:
    """The Apps one test starts, for its fixture to stop at the end."""

    def __init__(self) -> None:
        self._apps: list[App] = []

    async def start(self, write_config: Callable[[], Path | str]) -> App:
        app = await app_on_fresh_ports(write_config)
        self._apps.append(app)
        return app

    async def stop_all(self) -> None:
        apps, self._apps = self._apps, []
        for app in apps:
            await app.stop()
