"""`tenantgate keys create|list|rotate|revoke|usage` against a running admin API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from apikey_support import ADMIN_TOKEN, StartReplica
from google.rpc import code_pb2
from tenantgate.cli import main


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))  # the CLI's blocking channel, off-loop
    out, err = capsys.readouterr()
    return code, out, err


async def test_keys_cli_creates_lists_rotates_and_revokes(
        start_replica: StartReplica, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    a = await start_replica("a", admin=True)
    monkeypatch.setenv("TG_ADMIN_TOKEN", ADMIN_TOKEN)
    base = ("keys", "--admin", a.admin_address or "", "--token-env", "TG_ADMIN_TOKEN")

    code, out, err = await run_cli(capsys, *base, "create", "--tenant", "acme", "--name",
                                   "sync", "--scope", "things:read", "--ttl", "90d")
    assert code == 0, err
    api_key = out.strip()
    assert "shown once" in err and api_key not in err
    assert (await a.check(api_key)).status.code == code_pb2.OK
    key_id = api_key.split("_")[1]

    code, out, _ = await run_cli(capsys, *base, "--json", "list", "--tenant", "acme")
    listed = json.loads(out)["keys"]
    assert code == 0 and [k["key_id"] for k in listed] == [key_id]
    assert api_key.split("_", 2)[2] not in out  # a listing never carries the secret

    code, out, err = await run_cli(capsys, *base, "rotate", key_id, "--overlap", "1h")
    new_key = out.strip()
    assert code == 0 and new_key != api_key and new_key.startswith("tgk_")
    assert (await a.check(new_key)).status.code == code_pb2.OK
    assert (await a.check(api_key)).status.code == code_pb2.OK  # overlap

    (tmp_path / "token").write_text(ADMIN_TOKEN + "\n")
    code, out, _ = await run_cli(capsys, "keys", "--admin", a.admin_address or "",
                                 "--token-file", str(tmp_path / "token"), "revoke", key_id)
    assert code == 0 and out.startswith(f"{key_id}  revoked")
    assert (await a.check(api_key)).status.code == code_pb2.PERMISSION_DENIED

    code, out, _ = await run_cli(capsys, *base, "usage", "--tenant", "acme")
    assert code == 0 and out.startswith("tenant=acme requests=")


async def test_keys_cli_reports_refusals_in_one_line(
        start_replica: StartReplica, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    a = await start_replica("a", admin=True)
    monkeypatch.setenv("TG_WRONG", "w" * 40)
    code, _, err = await run_cli(capsys, "keys", "--admin", a.admin_address or "",
                                 "--token-env", "TG_WRONG", "list", "--tenant", "acme")
    assert (code, err) == (1, "tenantgate keys: UNAUTHENTICATED: admin credential required\n")
    monkeypatch.setenv("TG_ADMIN_TOKEN", ADMIN_TOKEN)
    code, _, err = await run_cli(capsys, "keys", "--admin", a.admin_address or "",
                                 "--token-env", "TG_ADMIN_TOKEN", "revoke", "0123456789abcdef")
    assert (code, err) == (1, "tenantgate keys: NOT_FOUND: no such key\n")
    code, _, err = await run_cli(capsys, "keys", "--token-env", "TG_ADMIN_TOKEN", "create",
                                 "--tenant", "acme", "--ttl", "soon")
    assert (code, err) == (2, "tenantgate keys: --ttl: must be a duration such as 30m, 12h "
                              "or 90d\n")


@pytest.mark.parametrize("option", ["--token", "--admin-token", "--bearer"])
def test_keys_cli_has_no_way_to_pass_the_token_on_the_command_line(
        capsys: pytest.CaptureFixture[str], option: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["keys", option, ADMIN_TOKEN, "list", "--tenant", "acme"])
    assert exited.value.code == 2
    assert "tenantgate keys: error:" in capsys.readouterr().err
