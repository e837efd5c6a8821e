"""The `tenantgate` command: --help everywhere, check-config exit codes and key-path
messages, token create-key/mint (the minted token passes the real pipeline), clean errors."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tenantgate.cli import build_parser, main
from tenantgate.testing.check import LocalCheck, build_config, check_request

FIXTURES = Path(__file__).parent.parent / "fixtures" / "config"


def console_script() -> str:
    found = Path(sys.executable).parent / "tenantgate"
    return str(found) if found.exists() else shutil.which("tenantgate") or "tenantgate"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([console_script(), *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
                  ) -> list[tuple[str, ...]]:
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += command_paths(sub, (*prefix, name))
    return paths


COMMANDS = command_paths(build_parser())


def test_every_command_of_the_issue_is_there() -> None:
    assert {("serve",), ("check-config",), ("token",), ("token", "create-key"),
            ("token", "mint")} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "tenantgate")
def test_help_on_every_command(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
                               ) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tenantgate") and len(out.splitlines()) > 3


def test_console_script_help_and_version() -> None:
    result = run("--help")
    assert result.returncode == 0 and "check-config" in result.stdout
    assert run("--version").stdout.startswith("tenantgate ")


def test_check_config_valid_exits_0() -> None:
    result = run("check-config", str(FIXTURES / "valid.yaml"),
                 env={"TG_TEST_CONTEXT_KEY": "k" * 64})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok (2 issuers, 1 tenants, 1 routes)")


def test_check_config_invalid_exits_2_with_the_key_path() -> None:
    path = FIXTURES / "jwks_url_not_https.yaml"
    result = run("check-config", str(path), env={"TG_TEST_CONTEXT_KEY": "k" * 64})
    assert result.returncode == 2
    assert result.stderr == (f"{path}: issuers[1].jwks: url must be an https URL "
                             "(allow_insecure_http: true for dev)\n")
    assert result.stdout == ""


def test_check_config_missing_file_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    result = run("check-config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr


def test_check_config_without_a_file_is_a_usage_error() -> None:
    result = run("check-config")
    assert result.returncode == 2 and result.stderr.startswith("usage:")


def test_token_create_key_and_mint_give_a_token_the_pipeline_accepts(tmp_path: Path) -> None:
    key, jwks = tmp_path / "dev.pem", tmp_path / "jwks.json"
    created = run("token", "create-key", "--out", str(key), "--jwks-out", str(jwks),
                  "--kid", "dev-7")
    assert created.returncode == 0, created.stderr
    assert key.stat().st_mode & 0o077 == 0, "private key readable by others"
    assert json.loads(jwks.read_text())["keys"][0]["kid"] == "dev-7"
    assert "PRIVATE" not in jwks.read_text()
    minted = run("token", "mint", "--key", str(key), "--kid", "dev-7", "--iss",
                 "https://dev.test", "--aud", "api", "--tenant", "acme", "--scope", "a b")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()

    async def decide() -> str:
        config = build_config(tmp_path, [{
            "name": "dev", "issuer": "https://dev.test", "audiences": ["api"],
            "jwks": {"file": "jwks.json"}, "tenant_pattern": "^[a-z]+$"}])
        async with LocalCheck(config) as gate:
            _, audit = await gate.check(check_request(
                headers={"authorization": f"Bearer {token}"}))
        assert audit is not None
        return str(audit["reason"])

    assert asyncio.run(decide()) == "ok"


def test_token_mint_with_a_missing_key_is_a_clean_error(tmp_path: Path) -> None:
    result = run("token", "mint", "--key", str(tmp_path / "none.pem"), "--iss", "i",
                 "--aud", "a", "--tenant", "t")
    assert result.returncode == 1
    assert result.stderr.startswith("tenantgate token: cannot load key")
    assert "Traceback" not in result.stderr


def test_serve_with_an_invalid_config_exits_2_naming_the_problem() -> None:
    result = run("serve", "--config", str(FIXTURES / "top_level_key_typo.yaml"),
                 env={"TG_TEST_CONTEXT_KEY": "k" * 64})
    assert result.returncode == 2
    assert "isuers: unknown key (did you mean 'issuers'?)" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_on_a_busy_port_exits_1_with_a_message(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        document = yaml.safe_load((FIXTURES / "valid.yaml").read_text())
        document["listen"]["grpc"] = f"127.0.0.1:{port}"
        document["issuers"] = document["issuers"][1:]  # no network at start-up
        path = tmp_path / "busy.yaml"
        path.write_text(yaml.safe_dump(document))
        result = run("serve", "--config", str(path), env={"TG_TEST_CONTEXT_KEY": "k" * 64})
    assert result.returncode == 1, result.stderr
    assert f"tenantgate: cannot start: listen.grpc 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("argv", "message"), [
    (["envoy-config", "x.yaml", "--authz-timeout", "nan"],
     "argument --authz-timeout: must be a positive, finite number of seconds, got 'nan'"),
    (["envoy-config", "x.yaml", "--authz-timeout", "inf"],
     "argument --authz-timeout: must be a positive, finite number of seconds, got 'inf'"),
    (["envoy-config", "x.yaml", "--authz-timeout", "-1"],
     "argument --authz-timeout: must be a positive, finite number of seconds, got '-1'"),
    (["envoy-config", "x.yaml", "--authz-timeout", "0"],
     "argument --authz-timeout: must be a positive, finite number of seconds, got '0'"),
    (["envoy-config", "x.yaml", "--authz-timeout", "soon"],
     "argument --authz-timeout: must be a number of seconds, got 'soon'"),
    (["demo", "--for-seconds", "nan"],
     "argument --for-seconds: must be a positive, finite number of seconds, got 'nan'"),
    (["demo", "--port", "70000"], "argument --port: must be a port from 1 to 65535, got '70000'"),
    (["demo", "--port", "0"], "argument --port: must be a port from 1 to 65535, got '0'"),
    (["token", "mint", "--ttl", "-60"],
     "argument --ttl: must be a positive whole number of seconds, got '-60'"),
    (["token", "mint", "--ttl", "0"],
     "argument --ttl: must be a positive whole number of seconds, got '0'"),
    (["token", "mint", "--ttl", "1.5"],
     "argument --ttl: must be a positive whole number of seconds, got '1.5'"),
    # Past 10 years, as `keys --ttl`: a huge one minted a token whose exp (2**53 or more)
    # tenantgate's verifier always refuses, and exited 0.
    (["token", "mint", "--ttl", "99999999999999999999"],
     "argument --ttl: must be at most 315360000 seconds (10 years), got '99999999999999999999'"),
    (["token", "mint", "--ttl", "315360001"],
     "argument --ttl: must be at most 315360000 seconds (10 years), got '315360001'"),
    (["token", "mint", "--ttl", "9" * 5000],  # past the digits int() takes
     f"argument --ttl: must be at most 315360000 seconds (10 years), got '{'9' * 5000}'"),
])
def test_numeric_options_refuse_what_would_fail_later(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: nan/inf were a traceback, -1 rendered `timeout: -1s` that Envoy refuses.
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith(message)


@pytest.mark.parametrize(("argv", "option"), [
    (["envoy-config", ""], "FILE"),
    (["check-config", ""], "FILE"),
    (["envoy-config", "x.yaml", "-o", ""], "--output/-o"),
    (["serve", "--config", ""], "--config"),
    (["token", "create-key", "--out", "", "--jwks-out", "x.json"], "--out"),
    (["token", "create-key", "--out", "k.pem", "--jwks-out", ""], "--jwks-out"),
    (["token", "mint", "--key", ""], "--key"),
    (["db", "install", "--config", ""], "--config"),
    (["db", "sync-keys", "--config", ""], "--config"),
    (["db", "add-key", "k1", "--secret-file", ""], "--secret-file"),
    (["keys", "--token-file", "", "list", "--tenant", "a"], "--token-file"),
    (["keys", "--ca", "", "list", "--tenant", "a"], "--ca"),
    (["keys", "--cert", "", "list", "--tenant", "a"], "--cert"),
    (["keys", "--key", "", "list", "--tenant", "a"], "--key"),
])
def test_an_empty_path_option_is_a_usage_error(
        argv: list[str], option: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Path("") is Path("."): it was read or written as the current directory and reported
    # as "invalid config .: Is a directory" or "cannot write .".
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.rstrip().splitlines()[-1].endswith(
        f"error: argument {option}: must not be empty")


def test_no_option_takes_a_bare_path() -> None:
    # A new file option written `type=Path` would take "" as the current directory again.
    def actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
        found = list(parser._actions)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found += actions(sub)
        return found

    assert [a.dest for a in actions(build_parser()) if a.type is Path] == []


@pytest.mark.parametrize("seconds", ["0.0001", "1e12"])
def test_envoy_config_timeout_outside_envoys_range_fails_at_render_time(
        seconds: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    # 0.1ms renders as 0s (Envoy: no timeout); 1e12 s is past google.protobuf.Duration's end.
    pytest.importorskip("envoy_data_plane")
    monkeypatch.setenv("TG_TEST_CONTEXT_KEY", "k" * 64)
    assert main(["envoy-config", str(FIXTURES / "valid.yaml"), "--authz-timeout", seconds]) == 2
    assert capsys.readouterr().err == (
        f"tenantgate: --authz-timeout: must be a number of seconds from 0.001 to 315576000000, "
        f"got {float(seconds)!r}\n")


@pytest.mark.parametrize("curve", ["secp256k1", "p192"])
def test_token_mint_with_a_key_jwt_cannot_sign_with_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], curve: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256K1() if curve == "secp256k1" else ec.SECP192R1())
    path = tmp_path / "k.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    code = main(["token", "mint", "--key", str(path), "--iss", "i", "--aud", "a",
                 "--tenant", "acme"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"tenantgate token: cannot sign with {path}: ")
    assert err.count("\n") == 1


def test_token_mint_refuses_a_non_utf8_argument_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "k.pem"
    assert main(["token", "create-key", "--out", str(key), "--jwks-out",
                 str(tmp_path / "j.json")]) == 0
    capsys.readouterr()
    # What Python makes of the argv bytes b"ac\xffme": a lone surrogate.
    code = main(["token", "mint", "--key", str(key), "--iss", "i", "--aud", "a",
                 "--tenant", os.fsdecode(b"ac\xffme")])
    assert (code, capsys.readouterr().err) == (2, "tenantgate token: --tenant: not valid UTF-8\n")


def test_check_config_refuses_an_admin_certificate_serve_cannot_use(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    from tenantgate.testing.pki import write_pki

    write_pki(tmp_path)
    monkeypatch.setenv("TG_TEST_CONTEXT_KEY", "k" * 64)
    document = yaml.safe_load((FIXTURES / "valid.yaml").read_text())
    document["api_keys"] = {"hash_secret": {"fromEnv": "TG_TEST_CONTEXT_KEY"},
                            "redis_url": "redis://127.0.0.1:6379/0"}
    document["admin"] = {"listen": "127.0.0.1:9002", "tls": {
        "cert": "server.key", "key": "server.crt", "client_ca": "ca.crt"}}  # swapped
    path = tmp_path / "admin.yaml"
    path.write_text(yaml.safe_dump(document))
    # Before: "ok", then serve failed with "admin.listen ...: cannot listen (address in use".
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err == f"{path}: admin.tls.cert: not a PEM certificate\n"


@pytest.mark.parametrize(("extra", "message"), [
    # Before: an empty --listen or --authz rendered the default address instead.
    (["--mode", "front", "--listen", ""], "--listen: must be host:port, got ''"),
    (["--mode", "front", "--authz", ""], "--authz: must be host:port, got ''"),
    # Before: int() read the full-width digits as port 9.
    (["--listen", "127.0.0.1:\uff10\uff10\uff19"],
     "--listen: must be host:port, got '127.0.0.1:\uff10\uff10\uff19'"),
    (["--upstream", "127.0.0.1:\u0669"], "--upstream: must be host:port, got '127.0.0.1:\u0669'"),
], ids=["empty-listen", "empty-authz", "fullwidth-port", "arabic-indic-port"])
def test_envoy_config_refuses_an_empty_address_or_non_ascii_port_digits(
        extra: list[str], message: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert_envoy_config_says(extra, message, capsys, monkeypatch)


def test_check_config_refuses_a_listen_port_of_non_ascii_digits(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    # Before: `\d` took the full-width digits, so check-config said ok and serve failed.
    monkeypatch.setenv("TG_TEST_CONTEXT_KEY", "k" * 64)
    document = yaml.safe_load((FIXTURES / "valid.yaml").read_text())
    document["listen"]["grpc"] = "127.0.0.1:\uff10\uff10\uff19"
    path = tmp_path / "fullwidth.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"{path}: listen.grpc: must be host:port with a port up to 65535, e.g. 127.0.0.1:9001\n")


@pytest.mark.parametrize("option", ["--upstream", "--authz", "--listen", "--rate-limit-domain"])
def test_envoy_config_refuses_a_non_utf8_option_in_one_line(
        option: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: a pydantic traceback from deep inside the Envoy message types.
    code = main(["envoy-config", str(FIXTURES / "valid.yaml"), option,
                 os.fsdecode(b"h\xffst:80")])
    assert (code, capsys.readouterr().err) == (2, f"tenantgate: {option}: not valid UTF-8\n")


def test_envoy_config_takes_a_config_file_whose_name_is_not_utf8(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    # Any bytes make a file name: the header shows it escaped (writing it raw was a traceback).
    pytest.importorskip("envoy_data_plane")
    monkeypatch.setenv("TG_TEST_CONTEXT_KEY", "k" * 64)
    config = tmp_path / os.fsdecode(b"v\xff.yaml")
    shutil.copy(FIXTURES / "valid.yaml", config)
    output = tmp_path / "envoy.yaml"
    assert main(["envoy-config", str(config), "--output", str(output)]) == 0, (
        capsys.readouterr().err)
    assert output.read_text().startswith(
        f"# Envoy bootstrap rendered by `tenantgate envoy-config {tmp_path}/v\\xff.yaml ")


NOT_UTF8 = os.fsdecode(b"x\xffy")  # what Python makes of such argv bytes: a lone surrogate
NO_SERVER = ["--dsn", "host=/nonexistent"]  # never a system Postgres, whatever the code does


@pytest.mark.parametrize(("argv", "option"), [
    (["db", "lint", "--dsn", NOT_UTF8], "--dsn"),
    (["db", "lint", *NO_SERVER, "--app-role", "app", "--app-role", NOT_UTF8], "--app-role"),
    (["db", "lint", *NO_SERVER, "--tenant-column", NOT_UTF8], "--tenant-column"),
    (["db", "retire-key", *NO_SERVER, NOT_UTF8], "KEY_ID"),
    (["db", "add-key", *NO_SERVER, NOT_UTF8, "--secret-env", "K"], "KEY_ID"),
], ids=["dsn", "app-role", "tenant-column", "retire-key-id", "add-key-id"])
def test_db_refuses_a_non_utf8_argument_in_one_line(
        argv: list[str], option: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: a UnicodeEncodeError traceback from libpq's connection string or the SQL call.
    assert (main(argv), capsys.readouterr().err) == (2, f"error: {option}: not valid UTF-8\n")


def test_db_reads_a_secret_file_whose_name_is_not_utf8(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A file name may hold any bytes: it is read (this one holds too short a secret).
    secret = tmp_path / NOT_UTF8
    secret.write_bytes(b"short")
    assert main(["db", "add-key", *NO_SERVER, "k1", "--secret-file", str(secret)]) == 1
    assert capsys.readouterr().err == "error: the secret must be at least 32 bytes\n"


def test_db_without_psycopg_says_what_to_install(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # As in the container image, which has no psycopg: before, a ModuleNotFoundError traceback.
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` now fails
    assert main(["db", "list-keys", *NO_SERVER]) == 1
    assert capsys.readouterr().err == (
        "error: tenantgate db needs psycopg: pip install 'tenantgate[backend]'\n")


def create_key(tmp_path: Path, *extra: str, out: str = "dev.pem", jwks: str = "jwks.json"
               ) -> int:
    return main(["token", "create-key", "--out", str(tmp_path / out),
                 "--jwks-out", str(tmp_path / jwks), *extra])


def test_token_create_key_never_has_the_private_key_readable_by_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: written with the umask's 0644, then chmod 0600; without that chmod (a race, or
    # a crash in between) anyone could read it. The key must be born owner-only.
    monkeypatch.setattr(os, "chmod", lambda *args, **kwargs: None)
    old_umask = os.umask(0o022)
    try:
        assert create_key(tmp_path) == 0
    finally:
        os.umask(old_umask)
    assert (tmp_path / "dev.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "jwks.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_token_create_key_refuses_a_path_that_is_not_a_regular_file(
        tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: a symlink was followed (the key went wherever it pointed), a FIFO blocked.
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "dev.pem"
    {"symlink": lambda: out.symlink_to(victim), "fifo": lambda: os.mkfifo(out),
     "directory": out.mkdir}[kind]()
    assert create_key(tmp_path) == 1
    assert capsys.readouterr().err == (
        f"tenantgate token: cannot write {out}: exists and is not a regular file\n")
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev.pem", "victim"]


def test_token_create_key_replaces_an_existing_key_file(tmp_path: Path) -> None:
    assert create_key(tmp_path) == 0
    first = (tmp_path / "dev.pem").read_bytes()
    assert create_key(tmp_path) == 0
    assert (tmp_path / "dev.pem").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev.pem", "jwks.json"]


def test_token_create_key_leaves_no_key_when_the_jwks_cannot_be_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: the key was written first and stayed behind, with no JWKS publishing it.
    assert create_key(tmp_path, jwks="missing/jwks.json") == 1
    assert capsys.readouterr().err == (f"tenantgate token: cannot write "
                                       f"{tmp_path / 'missing/jwks.json'}: No such file or "
                                       "directory\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("extra", "message"), [
    # Before: written, then unusable: mint refuses such a --kid.
    (["--kid", NOT_UTF8], "--kid: not valid UTF-8"),
    (["--jwks-out", "dev.pem"], "--out and --jwks-out must be different files"),
], ids=["non-utf8-kid", "same-file"])
def test_token_create_key_refuses_bad_arguments_before_writing_anything(
        tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["token", "create-key", "--out", "dev.pem", "--jwks-out", "jwks.json",
                 *extra]) == 2
    assert capsys.readouterr().err == f"tenantgate token: {message}\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("files", "message"), [
    ({"--ca": "garbage.pem"}, "--ca <garbage.pem>: not a PEM certificate"),
    ({"--ca": "empty.pem"}, "--ca <empty.pem>: not a PEM certificate"),
    ({"--ca": "ca.key"}, "--ca <ca.key>: not a PEM certificate"),
    ({"--cert": "client.key", "--key": "client.crt"},  # swapped
     "--cert <client.key>: not a PEM certificate"),
    ({"--cert": "client.crt", "--key": "garbage.pem"},
     "--key <garbage.pem>: not a PEM private key (unencrypted)"),
    ({"--cert": "client.crt", "--key": "server.key"},
     "--key <server.key>: not the private key of --cert <client.crt>"),
], ids=["garbage-ca", "empty-ca", "key-as-ca", "swapped", "garbage-key", "other-key"])
def test_keys_names_a_tls_file_that_is_not_what_its_option_needs(
        tmp_path: Path, files: dict[str, str], message: str,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: gRPC took any bytes and failed to connect, naming no file.
    from tenantgate.testing.pki import write_pki

    write_pki(tmp_path)
    (tmp_path / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    (tmp_path / "empty.pem").write_text("")
    monkeypatch.setenv("TG_ADMIN_TOKEN", "t0ken")
    options = [word for option, name in files.items() for word in (option, str(tmp_path / name))]
    code = main(["keys", "--admin", "127.0.0.1:9", "--token-env", "TG_ADMIN_TOKEN", *options,
                 "list", "--tenant", "acme"])
    expected = re.sub(r"<(.+?)>", lambda name: str(tmp_path / name.group(1)), message)
    assert (code, capsys.readouterr().err) == (2, f"tenantgate keys: {expected}\n")


def envoy_config(*extra: str) -> int:
    return main(["envoy-config", str(FIXTURES / "valid.yaml"), *extra])


def assert_envoy_config_says(extra: list[str], message: str,
                             capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """envoy-config on the valid fixture with `extra` exits 2 saying exactly `message`."""
    pytest.importorskip("envoy_data_plane")
    monkeypatch.setenv("TG_TEST_CONTEXT_KEY", "k" * 64)
    assert envoy_config(*extra) == 2
    assert capsys.readouterr().err == f"tenantgate: {message}\n"


@pytest.mark.parametrize(("extra", "message"), [
    # Before: a pydantic ValidationError traceback (Envoy's field is an int64), exit 1.
    (["--max-connections", "99999999999999999999"],
     "--max-connections: must be from 1 to 9223372036854775807, got 99999999999999999999"),
    (["--max-connections", "9223372036854775808"],
     "--max-connections: must be from 1 to 9223372036854775807, got 9223372036854775808"),
    (["--mode", "front", "--client-limit", "1/s", "--client-limit-addresses", "4294967296"],
     "--client-limit-addresses: must be from 1 to 4294967295, got 4294967296"),
], ids=["max-connections-huge", "max-connections-int64-plus-1", "client-limit-addresses"])
def test_envoy_config_refuses_a_count_past_envoys_field_in_one_line(
        extra: list[str], message: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert_envoy_config_says(extra, message, capsys, monkeypatch)


def config_listening_on(tmp_path: Path, grpc: str) -> Path:
    document = yaml.safe_load((FIXTURES / "valid.yaml").read_text())
    document["listen"]["grpc"] = grpc
    path = tmp_path / "listen.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize(("grpc", "mode"), [
    ("0.0.0.0:9001", "front"), ("[::]:9001", "front"), ("0.0.0.0:9001", "sidecar")])
def test_envoy_config_asks_for_authz_when_tenantgate_listens_on_every_address(
        tmp_path: Path, grpc: str, mode: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: the tenantgate cluster's address was 0.0.0.0 (or ::), which Envoy cannot reach.
    pytest.importorskip("envoy_data_plane")
    monkeypatch.setenv("TG_TEST_CONTEXT_KEY", "k" * 64)
    path = str(config_listening_on(tmp_path, grpc))
    assert main(["envoy-config", path, "--mode", mode]) == 2
    assert capsys.readouterr().err == (
        f"tenantgate: listen.grpc {grpc} listens on every address, which Envoy cannot connect "
        f"to: give --authz HOST:PORT, where Envoy reaches tenantgate\n")
    # A remote tenantgate needs TLS, or the explicit opt-out for a mesh, in either mode (a
    # sidecar without listen.uds calls it over TCP too).
    assert main(["envoy-config", path, "--mode", mode, "--authz", "10.0.0.7:9001",
                 "--authz-plaintext"]) == 0
    assert "address: 10.0.0.7" in capsys.readouterr().out


def test_envoy_config_says_a_port_of_0_is_out_of_range(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    # Before: "must be host:port, got '127.0.0.1:0'", though it is one.
    pytest.importorskip("envoy_data_plane")
    monkeypatch.setenv("TG_TEST_CONTEXT_KEY", "k" * 64)
    assert main(["envoy-config", str(config_listening_on(tmp_path, "127.0.0.1:0"))]) == 2
    assert capsys.readouterr().err == (
        "tenantgate: listen.grpc: the port must be from 1 to 65535, got '127.0.0.1:0'\n")


@pytest.mark.parametrize(("extra", "message"), [
    # Before: exit 0, and the newline or space went into the bootstrap's address.
    (["--upstream", "a\nb:80"],
     "--upstream: the host must be an IP address or a DNS name, got 'a\\nb:80'"),
    (["--mode", "front", "--authz", "tenant gate:9001"],
     "--authz: the host must be an IP address or a DNS name, got 'tenant gate:9001'"),
    (["--upstream", "app-:80"],
     "--upstream: the host must be an IP address or a DNS name, got 'app-:80'"),
    (["--upstream", "app/x:80"],
     "--upstream: the host must be an IP address or a DNS name, got 'app/x:80'"),
    (["--upstream", "0.0.0.0:8000"], "--upstream: 0.0.0.0 means every local address, which "
                                     "is no address to connect to, got '0.0.0.0:8000'"),
    (["--mode", "front", "--authz", "[::]:9001"], "--authz: :: means every local address, "
                                                 "which is no address to connect to, got "
                                                 "'[::]:9001'"),
], ids=["newline", "space", "trailing-hyphen", "slash", "upstream-any", "authz-any"])
def test_envoy_config_refuses_a_host_that_is_neither_ip_nor_dns_name(
        extra: list[str], message: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert_envoy_config_says(extra, message, capsys, monkeypatch)


@pytest.mark.parametrize("upstream", ["app.default.svc.cluster.local:80", "[::1]:8000",
                                      "10.0.0.7:8000", "a-1.example.:80",
                                      "tenantgate_authz:9001"])
def test_envoy_config_takes_an_ip_or_dns_name_upstream(
        upstream: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    pytest.importorskip("envoy_data_plane")
    monkeypatch.setenv("TG_TEST_CONTEXT_KEY", "k" * 64)
    assert envoy_config("--upstream", upstream) == 0


@pytest.mark.parametrize("admin", ["unix:", "unix://"])
def test_keys_refuses_a_unix_admin_address_without_a_path(
        admin: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: "UNAVAILABLE: empty address list" from gRPC, exit 1.
    monkeypatch.setenv("TG_ADMIN_TOKEN", "t0ken")
    code = main(["keys", "--admin", admin, "--token-env", "TG_ADMIN_TOKEN",
                 "list", "--tenant", "acme"])
    assert (code, capsys.readouterr().err) == (
        2, f"tenantgate keys: --admin unix:PATH needs a path, got {admin!r}\n")


@pytest.mark.parametrize("claim", ["exp", "sub", "iss"])
def test_mint_refuses_a_tenant_claim_it_sets_itself(claim: str) -> None:
    # The tenant id silently replaced that claim (an `exp` of "acme": a token never valid).
    result = run("token", "mint", "--key", "/nonexistent.pem", "--iss", "https://i/", "--aud",
                 "a", "--tenant", "acme", "--tenant-claim", claim)
    assert result.returncode == 2
    assert f"--tenant-claim: '{claim}' is a claim mint sets itself" in result.stderr


@pytest.mark.parametrize("version", ["-5", "99"])
def test_print_sql_refuses_a_version_outside_the_schemas(version: str) -> None:
    # Past the latest it printed nothing and exited 0, as for an up-to-date database.
    result = run("db", "print-sql", "--from-version", version)
    assert result.returncode == 2
    assert "--from-version: must be from 0 to" in result.stderr
    assert result.stdout == ""


def test_print_sql_from_the_latest_version_prints_nothing_and_succeeds() -> None:
    from tenantgate.db.schema import latest_version

    result = run("db", "print-sql", "--from-version", str(latest_version()))
    assert (result.returncode, result.stdout) == (0, "")
