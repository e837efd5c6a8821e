"""Development signing keys and JWT minting, for tests and `tenantgate token`."""

from __future__ import annotations

import errno
import json
import os
import secrets
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from tenantgate.config.files import read_file_or_pipe
from tenantgate.config.tls import MAX_PEM_BYTES, unencrypted_private_key

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}


def generate_key(algorithm: str = "RS256") -> PrivateKey:
    if algorithm.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm in _CURVES:
        return ec.generate_private_key(_CURVES[algorithm]())
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"no key generator for {algorithm}")


def public_jwk(key: PrivateKey, kid: str, algorithm: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(
        get_default_algorithms()[algorithm].to_jwk(key.public_key()))
    jwk.update({"kid": kid, "alg": algorithm, "use": "sig"})
    return jwk


def mint(key: Any, algorithm: str, claims: dict[str, Any], kid: str | None = None,
         headers: dict[str, Any] | None = None) -> str:
    extra = dict(headers or {})
    if kid is not None:
        extra["kid"] = kid
    return jwt.encode(claims, key, algorithm=algorithm, headers=extra)


def claims(issuer: str, audience: str | list[str], tenant: str | None, subject: str = "user-1",
           ttl: float = 300, tenant_claim: str = "tenant_id", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {"iss": issuer, "aud": audience, "sub": subject, "iat": now,
                            "exp": now + int(ttl), "jti": uuid.uuid4().hex}
    if tenant is not None:
        body[tenant_claim] = tenant
    body.update(extra)
    return body


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def save_key(key: PrivateKey, path: Path) -> None:
    """Write `key` as PKCS#8 PEM that only its owner can read, all or nothing (write_files)."""
    write_files([(path, key_pem(key), 0o600)])


def write_files(files: Sequence[tuple[Path, bytes, int]]) -> None:
    """Write every (path, data, mode), or none of them; an existing regular file is replaced.

    Each file is written under a temporary name beside its target, created with `mode` (less
    the umask), so a private key is never readable by others, not even for a moment; then it is
    renamed over the target, which is never followed: a symlink, FIFO or device there is
    refused, or the key would go wherever it points. An OSError names the target's path.
    """
    staged: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    target: Path | None = None
    try:
        for target, data, mode in files:
            if target.is_symlink() or (target.exists() and not target.is_file()):
                raise FileExistsError(errno.EEXIST, "exists and is not a regular file")
            staged.append((_stage(target, data, mode), target))
        for temporary, target in staged:
            temporary.replace(target)
            placed.append(target)
    except OSError as exc:
        for path in placed:  # all or nothing: a key without its JWKS is of no use
            path.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(target)) from None
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)  # nothing there once renamed


def _stage(path: Path, data: bytes, mode: int) -> Path:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def load_key(path: Path) -> PrivateKey:
    """The unencrypted PEM private key in a file or a pipe (bounded, never a device: /dev/zero
    exhausted memory); ValueError naming the path and why."""
    key = unencrypted_private_key(read_file_or_pipe(path, MAX_PEM_BYTES, "not a PEM private key"))
    if key is None:  # an encrypted key was a TypeError traceback
        raise ValueError(f"{path}: not a PEM private key (unencrypted)")
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                      | ed25519.Ed25519PrivateKey):
        raise ValueError(f"{path}: unsupported key type")
    return key


def algorithm_of(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    return {256: "ES256", 384: "ES384", 521: "ES512"}[key.curve.key_size]
