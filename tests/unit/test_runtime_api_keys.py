"""The Runtime's API-key verifier: built whenever `api_keys` is configured, and a module of
it that cannot be imported (a broken install, an import bug) fails loudly instead of turning
API keys off."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tenantgate.identity.apikeys import ApiKeys
from tenantgate.runtime import Runtime
from tenantgate.testing.check import DevIssuer, build_config


def api_keys_section(directory: Path) -> dict[str, object]:
    (directory / "hash.key").write_text("h" * 40)
    return {"hash_secret": {"fromFile": str(directory / "hash.key")}}


async def test_configured_api_keys_give_the_runtime_a_verifier(tmp_path: Path) -> None:
    runtime = Runtime.build(
        build_config(tmp_path, [DevIssuer().config()], api_keys=api_keys_section(tmp_path))
    )
    try:
        assert isinstance(runtime.api_keys, ApiKeys)
    finally:
        await runtime.close()


async def test_without_api_keys_the_runtime_has_none(tmp_path: Path) -> None:
    runtime = Runtime.build(build_config(tmp_path, [DevIssuer().config()]))
    try:
        assert runtime.api_keys is None
    finally:
        await runtime.close()


def test_an_api_key_module_failing_to_import_is_an_error_not_api_keys_off(tmp_path: Path) -> None:
    # Every valid key would otherwise get api_key_invalid, with nothing said at start-up.
    # Its own interpreter: blocking an import here would leave this process's modules odd.
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.modules["tenantgate.identity.apikeys"] = None  # its import fails, as if broken
        from tenantgate.testing.check import DevIssuer, build_config
        config = build_config(Path({str(tmp_path)!r}), [DevIssuer().config()],
                              api_keys={api_keys_section(tmp_path)!r})
        from tenantgate.runtime import Runtime
        runtime = Runtime.build(config)
        print("api_keys:", runtime.api_keys)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1, done.stdout
    assert "ModuleNotFoundError: import of tenantgate.identity.apikeys halted" in done.stderr
