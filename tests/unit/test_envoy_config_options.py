"""`tenantgate envoy-config` options that harden the bootstrap: TLS towards tenantgate (and the
refusal of a plaintext one across the network), forwarded headers in sidecar mode, address
families, and Envoy's admin interface on a Unix socket."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tenantgate.cli import main
from tenantgate.config.tls import MAX_PEM_BYTES

pytest.importorskip("envoy_data_plane")

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "envoy" / "tenantgate.yaml"
FRONT = ["--mode", "front"]


@pytest.fixture(autouse=True)
def context_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTGATE_CONTEXT_KEY", "x" * 32)


def rendered(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    """The bootstrap `envoy-config` prints for the example config and `argv` (exit 0)."""
    code = main(["envoy-config", str(EXAMPLE_CONFIG), *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    bootstrap: dict[str, Any] = yaml.safe_load(out)
    return bootstrap


def rendered_to(directory: Path, capsys: pytest.CaptureFixture[str], *argv: str,
                output: str = "envoy.yaml") -> dict[str, Any]:
    """As rendered, written to directory/envoy.yaml with --output (TLS writes its SDS files
    beside it); `output` as given on the command line."""
    code = main(["envoy-config", str(EXAMPLE_CONFIG), *argv, "--output", output])
    assert code == 0, capsys.readouterr().err
    bootstrap: dict[str, Any] = yaml.safe_load((directory / "envoy.yaml").read_text())
    return bootstrap


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one line `envoy-config` exits 2 with."""
    assert main(["envoy-config", str(EXAMPLE_CONFIG), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.removesuffix("\n")


def cluster(bootstrap: dict[str, Any], name: str = "tenantgate") -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in bootstrap["static_resources"]["clusters"]
                                 if c["name"] == name)
    return found


def tls_context(bootstrap: dict[str, Any]) -> dict[str, Any]:
    socket = cluster(bootstrap)["transport_socket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    context: dict[str, Any] = socket["typed_config"]
    assert context["@type"] == ("type.googleapis.com/"
                                "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext")
    return context


def san_matchers(context: dict[str, Any]) -> list[dict[str, Any]]:
    combined = context["common_tls_context"]["combined_validation_context"]
    found: list[dict[str, Any]] = combined["default_validation_context"][
        "match_typed_subject_alt_names"]
    return found


def sds_source(path: Path) -> dict[str, Any]:
    return {"path_config_source": {"path": str(path)}, "resource_api_version": "V3"}


# --- F2: TLS towards tenantgate -------------------------------------------------------------

@pytest.mark.parametrize("authz", ["10.0.0.5:9001", "tenantgate.auth.svc.cluster.local:9001",
                                   "[2001:db8::5]:9001"])
def test_front_mode_to_a_remote_tenantgate_in_plaintext_is_refused(
        capsys: pytest.CaptureFixture[str], authz: str) -> None:
    host = authz.rpartition(":")[0].strip("[]")
    assert refused(capsys, *FRONT, "--authz", authz) == (
        f"tenantgate: --authz: {host} is beyond loopback, and Envoy would send every bearer "
        f"token and API key to tenantgate, and take its answers, in plaintext: give "
        f"--authz-tls-ca FILE, or --authz-plaintext when a mesh already encrypts this hop "
        f"(Istio mTLS)")


def example_config(directory: Path, **listen: Any) -> Path:
    """The example config with `listen` changed (None removes a key), written in `directory`."""
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["listen"].update(listen)
    config["listen"] = {k: v for k, v in config["listen"].items() if v is not None}
    path = directory / "tenantgate.yaml"
    path.write_text(yaml.safe_dump(config))
    for name in config.get("quota", {}).get("ratelimit_service", {}).get("config_files", []):
        (directory / name).write_text((EXAMPLE_CONFIG.parent / name).read_text())
    return path


@pytest.mark.parametrize("mode", ["front", "sidecar"])
def test_a_remote_listen_grpc_is_refused_in_either_mode(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str) -> None:
    path = example_config(tmp_path, grpc="10.0.0.5:9001", uds=None)
    assert main(["envoy-config", str(path), "--mode", mode]) == 2
    assert capsys.readouterr().err.startswith("tenantgate: listen.grpc: 10.0.0.5 is beyond "
                                              "loopback")


def test_a_sidecar_without_a_unix_socket_to_a_remote_tenantgate_is_refused_in_plaintext(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: rendered in plaintext without a word, and --authz-plaintext was refused as
    # changing nothing ("allowed plaintext anyway"), though the hop leaves the host.
    path = str(example_config(tmp_path, uds=None))
    assert main(["envoy-config", path, "--authz", "10.0.0.5:9001"]) == 2
    assert capsys.readouterr().err == (
        "tenantgate: --authz: 10.0.0.5 is beyond loopback, and Envoy would send every bearer "
        "token and API key to tenantgate, and take its answers, in plaintext: give "
        "--authz-tls-ca FILE, or --authz-plaintext when a mesh already encrypts this hop "
        "(Istio mTLS)\n")
    assert main(["envoy-config", path, "--authz", "10.0.0.5:9001", "--authz-plaintext"]) == 0
    assert "transport_socket" not in cluster(yaml.safe_load(capsys.readouterr().out))


def test_authz_plaintext_allows_a_mesh_encrypted_hop(capsys: pytest.CaptureFixture[str]) -> None:
    bootstrap = rendered(capsys, *FRONT, "--authz", "10.0.0.5:9001", "--authz-plaintext")
    assert "transport_socket" not in cluster(bootstrap)


@pytest.mark.parametrize("argv", [
    [*FRONT],  # listen.grpc 127.0.0.1:9001
    [*FRONT, "--authz", "[::1]:9001"],
    [*FRONT, "--authz", "localhost:9001"],
    [],  # sidecar mode: the Unix socket
], ids=["front-listen-grpc", "front-ipv6-loopback", "front-localhost", "sidecar-uds"])
def test_loopback_and_the_unix_socket_stay_plaintext(
        capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert "transport_socket" not in cluster(rendered(capsys, *argv))


def test_tls_to_a_named_tenantgate_sends_and_verifies_that_name(
        pki: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(pki)
    bootstrap = rendered_to(pki, capsys, *FRONT, "--authz",
                            "tenantgate.auth.svc.cluster.local:9001",
                            "--authz-tls-ca", str(pki / "ca.crt"))
    assert tls_context(bootstrap) == {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                 "UpstreamTlsContext",
        "common_tls_context": {
            "combined_validation_context": {
                # Without it any certificate of the CA would do, not only tenantgate's.
                "default_validation_context": {"match_typed_subject_alt_names": [{
                    "san_type": "DNS",
                    "matcher": {"exact": "tenantgate.auth.svc.cluster.local"}}]},
                # The CA comes through SDS, which Envoy re-reads on renewal.
                "validation_context_sds_secret_config": {
                    "name": "tenantgate-authz-ca",
                    "sds_config": sds_source(pki / "envoy.authz-ca.sds.yaml")}},
            "alpn_protocols": ["h2"]},  # HTTP/2 over TLS is agreed by ALPN
        "sni": "tenantgate.auth.svc.cluster.local"}


def test_tls_to_an_ip_verifies_the_ip_san_and_sends_no_sni(
        pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = tls_context(rendered_to(pki, capsys, *FRONT, "--authz", "10.0.0.5:9001",
                                      "--authz-tls-ca", str(pki / "ca.crt"),
                                      output=str(pki / "envoy.yaml")))
    assert "sni" not in context
    assert san_matchers(context) == [{"san_type": "IP_ADDRESS",
                                      "matcher": {"exact": "10.0.0.5"}}]


def test_tls_sni_names_the_certificate_for_an_ip(
        pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = tls_context(rendered_to(pki, capsys, *FRONT, "--authz", "10.0.0.5:9001",
                                      "--authz-tls-ca", str(pki / "ca.crt"),
                                      "--authz-tls-sni", "tenantgate.internal.",
                                      output=str(pki / "envoy.yaml")))
    assert context["sni"] == "tenantgate.internal"
    assert san_matchers(context) == [{"san_type": "DNS",
                                      "matcher": {"exact": "tenantgate.internal"}}]


def test_mtls_renders_the_client_certificate_with_absolute_paths(
        pki: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(pki)  # relative here; Envoy may start in another directory
    context = tls_context(rendered_to(pki, capsys, *FRONT, "--authz", "10.0.0.5:9001",
                                      "--authz-tls-ca", "ca.crt", "--authz-tls-cert",
                                      "client.crt", "--authz-tls-key", "client.key"))
    common = context["common_tls_context"]
    assert common["tls_certificate_sds_secret_configs"] == [{
        "name": "tenantgate-authz-client",
        "sds_config": sds_source(pki / "envoy.authz-client.sds.yaml")}]
    [client] = yaml.safe_load((pki / "envoy.authz-client.sds.yaml").read_text())["resources"]
    assert client["tls_certificate"]["certificate_chain"] == {"filename": str(pki / "client.crt")}
    assert client["tls_certificate"]["private_key"] == {"filename": str(pki / "client.key")}
    [ca] = yaml.safe_load((pki / "envoy.authz-ca.sds.yaml").read_text())["resources"]
    assert ca["validation_context"]["trusted_ca"] == {"filename": str(pki / "ca.crt")}


def test_tls_on_the_authz_cluster_covers_the_rate_limit_service(
        pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bootstrap = rendered_to(pki, capsys, *FRONT, "--authz", "10.0.0.5:9001",
                            "--authz-tls-ca", str(pki / "ca.crt"), "--rate-limit",
                            output=str(pki / "envoy.yaml"))
    manager = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    [limiter] = [f for f in manager["typed_config"]["http_filters"]
                 if f["name"] == "envoy.filters.http.ratelimit"]
    service = limiter["typed_config"]["rate_limit_service"]["grpc_service"]["envoy_grpc"]
    assert service["cluster_name"] == "tenantgate"
    assert "transport_socket" in cluster(bootstrap)


@pytest.mark.parametrize("argv, message", [
    (["--authz-tls-ca", "{pki}/missing.crt"],
     "--authz-tls-ca: cannot read {pki}/missing.crt: No such file or directory"),
    (["--authz-tls-ca", "{pki}"], "--authz-tls-ca: cannot read {pki}: not a regular file"),
    (["--authz-tls-ca", "{pki}/ca.key"], "--authz-tls-ca: {pki}/ca.key: not a PEM certificate"),
    (["--authz-tls-ca", "{pki}/ca.crt", "--authz-tls-cert", "{pki}/client.key",
      "--authz-tls-key", "{pki}/client.key"],
     "--authz-tls-cert: {pki}/client.key: not a PEM certificate"),
    (["--authz-tls-ca", "{pki}/ca.crt", "--authz-tls-cert", "{pki}/client.crt",
      "--authz-tls-key", "{pki}/client.crt"],
     "--authz-tls-key: {pki}/client.crt holds no PEM unencrypted private key"),
    # Through SDS, Envoy loads the pair after `validate` and its start, then denies everything.
    (["--authz-tls-ca", "{pki}/ca.crt", "--authz-tls-cert", "{pki}/client.crt",
      "--authz-tls-key", "{pki}/stranger.key"],
     "--authz-tls-key: {pki}/stranger.key is not the private key of the --authz-tls-cert "
     "certificate {pki}/client.crt"),
    (["--authz-tls-ca", "{pki}/ca.crt", "--authz-tls-cert", "{pki}/client.crt"],
     "--authz-tls-cert: needs --authz-tls-key too"),
    (["--authz-tls-ca", "{pki}/ca.crt", "--authz-tls-key", "{pki}/client.key"],
     "--authz-tls-key: needs --authz-tls-cert too"),
    (["--authz-tls-cert", "{pki}/client.crt", "--authz-tls-key", "{pki}/client.key"],
     "--authz-tls-cert: needs --authz-tls-ca"),
    (["--authz-tls-sni", "tenantgate.internal"], "--authz-tls-sni: needs --authz-tls-ca"),
    (["--authz-tls-ca", "{pki}/ca.crt", "--authz-tls-sni", "10.0.0.5"],
     "--authz-tls-sni: must be a DNS name, got '10.0.0.5'"),
    (["--authz-tls-ca", "{pki}/ca.crt", "--authz-plaintext"],
     "--authz-plaintext: contradicts --authz-tls-ca"),
], ids=["missing", "directory", "ca-not-a-certificate", "cert-not-a-certificate",
        "key-not-a-key", "key-of-another-certificate", "cert-without-key", "key-without-cert",
        "cert-without-ca", "sni-without-ca", "sni-an-ip", "plaintext-and-tls"])
def test_bad_tls_options_are_one_line_errors(
        pki: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    argv = [a.format(pki=pki) for a in argv]
    assert refused(capsys, *FRONT, "--authz", "10.0.0.5:9001", *argv) == (
        "tenantgate: " + message.format(pki=pki))


def broken_certificate(pem: bytes) -> bytes:
    """`pem`'s certificate cut short: the PEM markers and base64 are intact, the DER is not."""
    der = base64.b64decode(b"".join(pem.splitlines()[1:-1]))
    body = base64.encodebytes(der[:-16])
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("option, layout", [
    ("ca", ["broken"]),
    ("ca", ["ca.crt", "broken"]),
    ("cert", ["client.crt", "broken"]),
], ids=["ca-broken", "ca-bundle-second-broken", "chain-second-broken"])
def test_a_broken_certificate_anywhere_in_a_tls_file_is_refused(
        pki: Path, capsys: pytest.CaptureFixture[str], option: str, layout: list[str]) -> None:
    # Before: the CA was only searched for BEGIN CERTIFICATE and only the chain's first
    # certificate parsed; Envoy then rejected the secret once started (update_rejected, 503).
    (pki / "bad.crt").write_bytes(b"".join(
        broken_certificate((pki / "ca.crt").read_bytes()) if name == "broken"
        else (pki / name).read_bytes() for name in layout))
    files = {"ca": "ca.crt", "cert": "client.crt", option: "bad.crt"}
    assert refused(capsys, *FRONT, "--authz", "10.0.0.5:9001",
                   "--authz-tls-ca", str(pki / files["ca"]),
                   "--authz-tls-cert", str(pki / files["cert"]),
                   "--authz-tls-key", str(pki / "client.key"),
                   "--output", str(pki / "envoy.yaml")) == (
        f"tenantgate: --authz-tls-{option}: {pki}/bad.crt: not a PEM certificate")
    assert not list(pki.glob("envoy*"))


@pytest.mark.parametrize("chain, accepted", [
    (("client.crt", "ca.crt"), True),  # the certificate, then its issuer
    (("ca.crt", "client.crt"), False),  # Envoy presents the first: the CA's, not the key's
], ids=["certificate-first", "issuer-first"])
def test_the_key_must_be_that_of_the_first_certificate_of_the_chain(
        pki: Path, capsys: pytest.CaptureFixture[str], chain: tuple[str, str],
        accepted: bool) -> None:
    (pki / "chain.crt").write_bytes(b"".join((pki / name).read_bytes() for name in chain))
    argv = ["envoy-config", str(EXAMPLE_CONFIG), *FRONT, "--authz", "10.0.0.5:9001",
            "--authz-tls-ca", str(pki / "ca.crt"), "--authz-tls-cert", str(pki / "chain.crt"),
            "--authz-tls-key", str(pki / "client.key"), "--output", str(pki / "envoy.yaml")]
    assert main(argv) == (0 if accepted else 2), capsys.readouterr().err
    assert (pki / "envoy.yaml").exists() == accepted


@pytest.mark.parametrize("mode", [
    pytest.param(0o000, marks=pytest.mark.skipif(os.geteuid() == 0,
                                                   reason="root reads a file whatever its mode")),
    None], ids=["mode-0", "parent-is-a-file"])
def test_an_unreadable_tls_file_is_a_one_line_error(
        pki: Path, capsys: pytest.CaptureFixture[str], mode: int | None) -> None:
    if mode is not None:
        (pki / "ca.crt").chmod(mode)
        path, reason = pki / "ca.crt", "Permission denied"
    else:  # an error the OS returns to root too
        path, reason = pki / "ca.crt" / "ca.crt", "Not a directory"
    assert refused(capsys, *FRONT, "--authz", "10.0.0.5:9001", "--authz-tls-ca",
                   str(path)) == f"tenantgate: --authz-tls-ca: cannot read {path}: {reason}"


# Run in the child before tenantgate loads: reading /dev/zero whole fails fast, not the host.
# Not a preexec_fn: that makes subprocess fork instead of vfork, and a fork while this
# process's gRPC threads run can abort the child (SIGABRT seen once in a full run).
LIMITED_MAIN = ("import resource, sys; "
                "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
                "from tenantgate.cli import main; sys.exit(main())")


@pytest.mark.parametrize(("make", "reason"), [
    (os.mkfifo, "not a regular file"),
    (lambda path: os.symlink("/dev/zero", path), "not a regular file"),
    (lambda path: Path(path).write_bytes(b"#" * (MAX_PEM_BYTES + 1)),
     f"larger than {MAX_PEM_BYTES} bytes"),
], ids=["fifo", "dev-zero", "oversized"])
def test_a_tls_file_that_is_not_a_small_regular_file_is_a_one_line_error(
        tmp_path: Path, make: Any, reason: str) -> None:
    # Before: a FIFO hung the command for good, /dev/zero ended in a MemoryError traceback.
    # In a child, with a deadline: the old behaviour must fail this test, not hang it.
    path = tmp_path / "ca.crt"
    make(str(path))
    env = {**os.environ, "TENANTGATE_CONTEXT_KEY": "x" * 32}
    try:
        done = subprocess.run(
            [sys.executable, "-c", LIMITED_MAIN, "envoy-config", str(EXAMPLE_CONFIG), *FRONT,
             "--authz", "10.0.0.5:9001", "--authz-tls-ca", str(path)],
            capture_output=True, text=True, timeout=30, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"envoy-config still reading {path} after 30 s")
    assert (done.returncode, done.stderr) == (
        2, f"tenantgate: --authz-tls-ca: cannot read {path}: {reason}\n")


def encrypted_key(form: str) -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, getattr(serialization.PrivateFormat, form),
        serialization.BestAvailableEncryption(b"passphrase"))


@pytest.mark.parametrize("form", ["PKCS8", "TraditionalOpenSSL"])
def test_an_encrypted_private_key_is_refused(
        pki: Path, capsys: pytest.CaptureFixture[str], form: str) -> None:
    # Envoy would need its password; the bootstrap would not load. Before, the legacy form
    # (BEGIN EC PRIVATE KEY, Proc-Type: 4,ENCRYPTED) was taken for an unencrypted key.
    (pki / "locked.key").write_bytes(encrypted_key(form))
    assert refused(capsys, *FRONT, "--authz", "10.0.0.5:9001",
                   "--authz-tls-ca", str(pki / "ca.crt"),
                   "--authz-tls-cert", str(pki / "client.crt"),
                   "--authz-tls-key", str(pki / "locked.key")) == (
        f"tenantgate: --authz-tls-key: {pki}/locked.key holds no PEM unencrypted private key")


@pytest.mark.parametrize("argv, message", [
    (["--authz-tls-ca", "{pki}/ca.crt"], "--authz-tls-ca: Envoy calls tenantgate over the Unix "
                                         "socket /run/tenantgate/authz.sock, which takes no TLS"),
    (["--authz-plaintext"], "--authz-plaintext: Envoy calls tenantgate over the Unix socket "
                            "/run/tenantgate/authz.sock, which takes no TLS"),
    ([*FRONT, "--authz-plaintext"],
     "--authz-plaintext: only for a tenantgate beyond loopback; 127.0.0.1 is loopback, "
     "allowed plaintext anyway"),
], ids=["tls-on-the-unix-socket", "plaintext-on-the-unix-socket", "plaintext-on-loopback"])
def test_tls_options_that_would_do_nothing_are_refused(
        pki: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    argv = [a.format(pki=pki) for a in argv]
    assert refused(capsys, *argv) == "tenantgate: " + message.format(pki=pki)


def test_the_help_lists_the_tls_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["envoy-config", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--authz-tls-ca FILE", "--authz-tls-cert FILE", "--authz-tls-key FILE",
                   "--authz-tls-sni NAME", "--authz-plaintext"):
        assert option in text


# --- F3: forwarded headers behind a gateway in sidecar mode ----------------------------------

def http_manager(bootstrap: dict[str, Any]) -> dict[str, Any]:
    manager: dict[str, Any] = (bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]
                               ["filters"][0]["typed_config"])
    return manager


def test_sidecar_behind_a_tls_gateway_may_trust_its_forwarded_headers(
        capsys: pytest.CaptureFixture[str]) -> None:
    # With 0 hops Envoy overwrote the gateway's x-forwarded-proto: https with http.
    manager = http_manager(rendered(capsys, "--xff-num-trusted-hops", "1"))
    assert manager["use_remote_address"] is True and manager["xff_num_trusted_hops"] == 1


def test_the_client_limit_stays_front_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert refused(capsys, "--xff-num-trusted-hops", "1", "--client-limit", "100/s").startswith(
        "tenantgate: --client-limit: front mode only")


# --- F4: address families ------------------------------------------------------------------

def listener_address(bootstrap: dict[str, Any]) -> dict[str, Any]:
    address: dict[str, Any] = bootstrap["static_resources"]["listeners"][0]["address"]
    return address


def test_listen_on_every_ipv6_address_accepts_ipv4_too(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert listener_address(rendered(capsys, "--listen", "[::]:15000")) == {
        "socket_address": {"address": "::", "port_value": 15000, "ipv4_compat": True}}


@pytest.mark.parametrize("listen", ["[::1]:15000", "0.0.0.0:15000", "[2001:db8::1]:15000"])
def test_other_listen_addresses_keep_their_family(
        capsys: pytest.CaptureFixture[str], listen: str) -> None:
    assert "ipv4_compat" not in listener_address(
        rendered(capsys, "--listen", listen))["socket_address"]


def test_clusters_found_by_name_prefer_ipv4(capsys: pytest.CaptureFixture[str]) -> None:
    # AUTO asked for IPv6 first: localhost became ::1, and an app on 127.0.0.1 got 503.
    bootstrap = rendered(capsys, *FRONT, "--upstream", "localhost:8000",
                         "--authz", "localhost:9001")
    for name in ("app", "tenantgate"):
        assert cluster(bootstrap, name)["type"] == "STRICT_DNS"
        assert cluster(bootstrap, name)["dns_lookup_family"] == "V4_PREFERRED"
    static = rendered(capsys, *FRONT)  # IPs: nothing to resolve
    assert "dns_lookup_family" not in cluster(static, "app")


# --- F5: Envoy's admin interface on a Unix socket -------------------------------------------

def test_admin_may_be_a_unix_socket_only_envoy_can_open(
        capsys: pytest.CaptureFixture[str]) -> None:
    bootstrap = rendered(capsys, "--admin", "unix:/run/envoy/admin.sock")
    assert bootstrap["admin"] == {"address": {"pipe": {"path": "/run/envoy/admin.sock",
                                                       "mode": 0o600}}}


@pytest.mark.parametrize("admin, message", [
    ("unix:admin.sock", "--admin: unix: takes an absolute file path, got 'unix:admin.sock'"),
    ("unix:", "--admin: unix: takes an absolute file path, got 'unix:'"),
    ("unix:@envoy-admin", "--admin: an abstract socket has no file permissions, so the app "
                          "could connect to it; give a file path, got 'unix:@envoy-admin'"),
    ("unix:/" + "a" * 120, f"--admin: /{'a' * 120} is 121 bytes: a Unix socket path holds at "
                           f"most 107 (sun_path); choose a shorter one"),
    ("0.0.0.0:9901", "--admin: Envoy's admin interface must stay on loopback (127.0.0.1, ::1) "
                     "or on a unix:/PATH socket, got '0.0.0.0:9901'"),
], ids=["relative", "empty", "abstract", "too-long", "not-loopback"])
def test_bad_admin_addresses_are_one_line_errors(
        capsys: pytest.CaptureFixture[str], admin: str, message: str) -> None:
    assert refused(capsys, "--admin", admin) == "tenantgate: " + message


# --- How Envoy speaks to the application ------------------------------------------------------

APP_PROTOCOL_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# 16 streams x 64 KiB fill the 1 MiB connection window at most: unread streams cannot stall it.
BOUNDED_WINDOWS = {"initial_stream_window_size": 65536, "initial_connection_window_size": 1048576,
                   "max_concurrent_streams": 16}
TRAILER_FILTER = "envoy.filters.http.header_mutation"


def test_the_app_is_spoken_to_in_http1_unless_told_otherwise(
        capsys: pytest.CaptureFixture[str]) -> None:
    default = main(["envoy-config", str(EXAMPLE_CONFIG)]), capsys.readouterr()
    explicit = main(["envoy-config", str(EXAMPLE_CONFIG), "--upstream-protocol", "http1"])
    assert (default[0], explicit) == (0, 0)
    assert capsys.readouterr().out == default[1].out  # byte for byte: no option, no change
    bootstrap = yaml.safe_load(default[1].out)
    assert "typed_extension_protocol_options" not in cluster(bootstrap, "app")
    # Envoy forwards no request trailers over HTTP/1.1: no trailer filter.
    assert TRAILER_FILTER not in [f["name"] for f in http_manager(bootstrap)["http_filters"]]


@pytest.mark.parametrize("protocol, expected", [
    ("http2", {"explicit_http_config": {"http2_protocol_options": BOUNDED_WINDOWS}}),
    ("downstream", {"use_downstream_protocol_config": {
        "http_protocol_options": {}, "http2_protocol_options": BOUNDED_WINDOWS}}),
])
@pytest.mark.parametrize("mode", ["sidecar", "front"])
def test_a_grpc_or_h2c_app_is_spoken_to_in_http2(
        capsys: pytest.CaptureFixture[str], mode: str, protocol: str,
        expected: dict[str, Any]) -> None:
    app = cluster(rendered(capsys, "--mode", mode, "--upstream-protocol", protocol), "app")
    options = app["typed_extension_protocol_options"][APP_PROTOCOL_KEY]
    assert options.pop("@type") == "type.googleapis.com/" + APP_PROTOCOL_KEY
    assert options == expected
    assert app["per_connection_buffer_limit_bytes"] == 32768  # still bounded


@pytest.mark.parametrize("protocol", ["http2", "downstream"])
def test_an_http2_app_gets_no_client_trailer_named_like_a_stripped_header(
        capsys: pytest.CaptureFixture[str], protocol: str) -> None:
    manager = http_manager(rendered(capsys, "--upstream-protocol", protocol))
    first = manager["http_filters"][0]
    assert first["name"] == TRAILER_FILTER
    trailers = first["typed_config"]["mutations"]["request_trailers_mutations"]
    removed = [m["remove"] for m in trailers]
    early = manager["early_header_mutation_extensions"][0]["typed_config"]["mutations"]
    assert removed == [m["remove"] for m in early]  # the same names as the header strip
    assert {"x-tenant-id", "x-tenant-context", "x-http-method-override"} <= set(removed)


@pytest.mark.parametrize("value", ["h2c", "HTTP2", "", "grpc"])
def test_an_unknown_upstream_protocol_is_a_usage_error(
        capsys: pytest.CaptureFixture[str], value: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["envoy-config", str(EXAMPLE_CONFIG), "--upstream-protocol", value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"tenantgate envoy-config: error: argument --upstream-protocol: invalid choice: "
        f"{value!r} (choose from 'http1', 'http2', 'downstream')")


def test_envoy_options_refuse_an_unknown_upstream_protocol() -> None:
    from tenantgate.config.envoy import EnvoyConfigError, EnvoyOptions

    with pytest.raises(EnvoyConfigError, match=r"^--upstream-protocol: must be one of http1, "
                                               r"http2, downstream, got 'h2c'$"):
        EnvoyOptions(upstream_protocol="h2c")  # type: ignore[arg-type]


def test_the_help_names_the_upstream_protocols(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["envoy-config", "--help"])
    assert "--upstream-protocol {http1,http2,downstream}" in capsys.readouterr().out
