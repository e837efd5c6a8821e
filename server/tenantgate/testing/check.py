"""Test helpers for a whole Check: CheckRequest builders, a development issuer, a config
builder and an in-process pipeline run, so a setup can be tested without Envoy."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from tenantgate.config.load import parse_config
from tenantgate.config.model import Config
from tenantgate.testing import tokens

if TYPE_CHECKING:
    from tenantgate.decision import Reason
    from tenantgate.identity.model import Identity
    from tenantgate.runtime import Runtime


def check_request(path: str = "/", method: str = "GET", *,
                  headers: Mapping[str, str] | None = None,
                  raw_headers: Iterable[tuple[str, str]] | None = None,
                  request_id: str = "req-test", host: str = "api.test",
                  size: int = -1, source: str = "127.0.0.1") -> CheckRequest:
    """A CheckRequest as Envoy sends it: `headers` fills the joined map, `raw_headers` the
    raw `header_map` (one entry per copy, as with `encode_raw_headers: true`)."""
    request = CheckRequest()
    http = request.attributes.request.http
    http.id, http.method, http.path, http.host, http.size = request_id, method, path, host, size
    for name, value in (headers or {}).items():
        http.headers[name] = value
    for name, value in raw_headers or ():
        http.header_map.headers.add(key=name, raw_value=value.encode())
    request.attributes.source.address.socket_address.address = source
    return request


@dataclass
class DevIssuer:
    """An issuer with its own signing keys; its public keys can be inlined or served."""

    issuer: str = "https://idp.test"
    audience: str = "api"
    name: str = "idp"
    algorithm: str = "RS256"
    kid: str = "k1"
    keys: dict[str, tokens.PrivateKey] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys[self.kid] = tokens.generate_key(self.algorithm)

    def add_key(self, kid: str) -> None:
        self.keys[kid] = tokens.generate_key(self.algorithm)

    def jwks(self, kids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        chosen = self.keys if kids is None else {k: self.keys[k] for k in kids}
        return [tokens.public_jwk(key, kid, self.algorithm) for kid, key in chosen.items()]

    def claims(self, tenant: str | None = "acme", **extra: Any) -> dict[str, Any]:
        return tokens.claims(self.issuer, self.audience, tenant, **extra)

    def token(self, tenant: Any = "acme", *, kid: str | None = None,
              headers: dict[str, Any] | None = None, **extra: Any) -> str:
        kid = kid or self.kid
        body = tokens.claims(self.issuer, self.audience, None, **extra)
        if tenant is not None:
            body["tenant_id"] = tenant
        return tokens.mint(self.keys[kid], self.algorithm, body, kid=kid, headers=headers)

    def config(self, **overrides: Any) -> dict[str, Any]:
        """This issuer's config entry with an inline JWKS (override `jwks` to serve it)."""
        entry: dict[str, Any] = {"name": self.name, "issuer": self.issuer,
                                 "audiences": [self.audience],
                                 "jwks": {"inline": {"keys": self.jwks()}},
                                 "tenant_pattern": "^[a-z0-9_-]{1,63}$"}
        entry.update(overrides)
        return entry


def context_key_file(directory: Path, name: str = "context.key") -> str:
    """Write a fresh 32-byte context signing secret; returns the file name to reference."""
    (directory / name).write_text(secrets.token_hex(32))
    return name


def build_config(directory: Path, issuers: list[dict[str, Any]], **sections: Any) -> Config:
    """A valid Config around the given issuers, with a context key in `directory`."""
    document = config_document(directory, issuers, **sections)
    return parse_config(yaml.safe_dump(document), base_dir=directory)


def config_document(directory: Path, issuers: list[dict[str, Any]],
                    **sections: Any) -> dict[str, Any]:
    """The config as a dict (write it with yaml.safe_dump); a context key file is created.

    Sections given as keyword arguments (tenants=..., policy=...) replace the defaults; the
    gRPC and metrics listeners default to off-port values that tests override.
    """
    document: dict[str, Any] = {
        "listen": {"grpc": "127.0.0.1:0", "metrics": None},
        "issuers": issuers,
        "context": {"active_key": "c1",
                    "keys": [{"id": "c1", "secret": {"fromFile": context_key_file(directory)}}]},
        # Every Check audited: tests read the line each one wrote (no sampling, no rate cap).
        "audit": {"path": str(directory / "audit.log"), "sample_allow": 1.0,
                  "max_lines_per_second": 0},
    }
    document.update(sections)
    return document


class CheckAborted(Exception):
    """The servicer aborted the RPC (an internal error): Envoy would see a gRPC error."""

    def __init__(self, code: object, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code


class _ServicerContext:
    """The one ServicerContext call the Check servicer makes, recorded instead of sent."""

    async def abort(self, code: object, details: str = "") -> None:
        raise CheckAborted(code, details)


class LocalCheck:
    """The real Check servicer over a Runtime, in-process; returns each response together
    with the audit line it wrote (the config's audit.path must be a file)."""

    def __init__(self, config: Config) -> None:
        from tenantgate.authz import AuthorizationServicer
        from tenantgate.runtime import Runtime

        self.runtime = Runtime.build(config)
        self.servicer = AuthorizationServicer(lambda: self.runtime)
        self._audit = Path(config.audit.path)
        self._seen = 0

    async def __aenter__(self) -> LocalCheck:
        await self.runtime.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runtime.close()

    async def check(self, request: CheckRequest) -> tuple[CheckResponse, dict[str, Any] | None]:
        encoded = await self.servicer.Check(request, _ServicerContext())
        response = CheckResponse.FromString(encoded)  # the bytes Envoy would parse
        if not self._audit.exists():
            return response, None
        with open(self._audit, "rb") as log:  # only what this Check appended
            log.seek(self._seen)
            new = log.read()
        self._seen += len(new)
        lines = new.decode("utf-8").splitlines()
        return response, (json.loads(lines[-1]) if lines else None)


def record_verifications(runtime: Runtime) -> list[str]:
    """Every token `runtime`'s JWT verifier is asked to check from now on, in order: what a
    test of a cache in front of it counts."""
    verified: list[str] = []
    verify = runtime.jwt.verify

    async def recording(token: str, now: float) -> Identity | Reason:
        verified.append(token)
        return await verify(token, now)

    setattr(runtime.jwt, "verify", recording)  # noqa: B010 (mypy refuses assigning a method)
    return verified
