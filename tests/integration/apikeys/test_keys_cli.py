"""`tenantgate keys create|list|rotate|revoke|usage` against a running admin API."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from apikey_support import ADMIN_TOKEN, Replica, StartReplica
from google.rpc import code_pb2
from redis.asyncio import Redis
from tenantgate.cli import keys as keys_cli
from tenantgate.cli import main


def cli_base(replica: Replica, monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """`tenantgate keys` pointed at `replica`'s admin API, the token read from the env."""
    monkeypatch.setenv("TG_ADMIN_TOKEN", ADMIN_TOKEN)
    return ("keys", "--admin", replica.admin_address or "", "--token-env", "TG_ADMIN_TOKEN")


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))  # the CLI's blocking channel, off-loop
    out, err = capsys.readouterr()
    return code, out, err


async def test_keys_cli_creates_lists_rotates_and_revokes(
        start_replica: StartReplica, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    a = await start_replica("a", admin=True)
    base = cli_base(a, monkeypatch)

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


async def test_keys_cli_durations_mean_what_they_say(
        start_replica: StartReplica, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    a = await start_replica("a", admin=True)
    base = cli_base(a, monkeypatch)

    code, out, err = await run_cli(capsys, *base, "--json", "create", "--tenant", "acme",
                                   "--ttl", "500ms")  # rounded up, not truncated to "never"
    key = json.loads(out)["key"]
    assert code == 0 and int(key["expires_at"]) - int(key["created_at"]) == 1, err
    code, _, err = await run_cli(capsys, *base, "create", "--tenant", "acme", "--ttl", "0")
    assert (code, err) == (2, "tenantgate keys: --ttl: must be at least 1s (leave --ttl out "
                              "for a key that never expires)\n")
    for ttl in ("99999999999999d", "200000000000000d", "3651d"):
        code, _, err = await run_cli(capsys, *base, "create", "--tenant", "acme", "--ttl", ttl)
        assert (code, err) == (2, "tenantgate keys: --ttl: at most 3650d (10 years)\n")

    code, out, _ = await run_cli(capsys, *base, "create", "--tenant", "acme")
    api_key = out.strip()
    code, out, err = await run_cli(capsys, *base, "rotate", api_key.split("_")[1],
                                   "--overlap", "0")  # 0: the old key stops working now
    assert code == 0, err
    assert (await a.check(api_key)).status.code == code_pb2.PERMISSION_DENIED
    assert (await a.check(out.strip())).status.code == code_pb2.OK
    # --all: the 500ms key and the rotated one have expired (a plain list leaves them out).
    listed = await run_cli(capsys, *base, "--json", "list", "--all", "--tenant", "acme")
    assert len(json.loads(listed[1])["keys"]) == 3  # 500ms, rotated and new: no refused one


async def test_keys_cli_reports_unusable_arguments_in_one_line(
        start_replica: StartReplica, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    a = await start_replica("a", admin=True)
    base = cli_base(a, monkeypatch)
    ff = os.fsdecode(b"\xff")  # what Python makes of a non-UTF-8 argv byte
    for argv, option in [(("revoke", ff), "KEY_ID"),
                         (("create", "--tenant", f"ac{ff}me"), "--tenant"),
                         (("create", "--tenant", "acme", "--scope", ff), "--scope")]:
        code, _, err = await run_cli(capsys, *base, *argv)
        assert (code, err) == (2, f"tenantgate keys: {option}: not valid UTF-8\n")

    # gRPC would wrap port 99999 round to 34463 and send the token there.
    code, _, err = await run_cli(capsys, "keys", "--admin", "127.0.0.1:99999",
                                 "--token-env", "TG_ADMIN_TOKEN", "list", "--tenant", "acme")
    assert (code, err) == (2, "tenantgate keys: --admin 127.0.0.1:99999: must be host:port "
                              "with a port from 1 to 65535, or unix:PATH\n")
    code, _, err = await run_cli(capsys, "keys", "--admin", a.admin_address or "",
                                 "list", "--tenant", "acme")
    assert (code, err) == (2, "tenantgate keys: give one of --token-env NAME or --token-file "
                              "FILE (or --cert and --key, for an admin API that takes a client "
                              "certificate alone)\n")

    token_file = tmp_path / "token"
    token_file.write_bytes(b"\xff" * 40)
    code, _, err = await run_cli(capsys, "keys", "--admin", a.admin_address or "",
                                 "--token-file", str(token_file), "list", "--tenant", "acme")
    assert (code, err) == (2, f"tenantgate keys: {token_file}: the token is not valid UTF-8\n")


async def test_keys_cli_lists_a_key_whose_expiry_the_platform_cannot_format(
        start_replica: StartReplica, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    a = await start_replica("a", admin=True)
    base = cli_base(a, monkeypatch)
    code, out, _ = await run_cli(capsys, *base, "create", "--tenant", "acme")
    key_id = out.strip().split("_")[1]
    async with Redis.from_url(redis_url) as client:  # stored before lifetimes were bounded
        await client.hset(f"tenantgate:apikey:{key_id}", "expires_at", str(2**62))
    code, out, err = await run_cli(capsys, *base, "list", "--tenant", "acme")
    assert code == 0, err
    assert f"expires={2**62} " in out


async def test_keys_cli_prints_the_new_secret_before_anything_that_could_fail(
        start_replica: StartReplica, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    a = await start_replica("a", admin=True)
    base = cli_base(a, monkeypatch)

    def broken(key: object) -> str:
        raise RuntimeError("formatting failed")

    monkeypatch.setattr(keys_cli, "_line", broken)
    capsys.readouterr()
    with pytest.raises(RuntimeError):
        await asyncio.to_thread(main, [*base, "create", "--tenant", "acme"])
    created = capsys.readouterr().out.strip()
    assert created.startswith("tgk_")  # the caller still got the secret
    with pytest.raises(RuntimeError):
        await asyncio.to_thread(main, [*base, "rotate", created.split("_")[1]])
    assert capsys.readouterr().out.strip().startswith("tgk_")
