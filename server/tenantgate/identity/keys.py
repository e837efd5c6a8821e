"""Which JWK may verify which algorithm, and turning JWKs into prepared verification keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import InvalidKeyError

_ALGORITHMS = get_default_algorithms()
# The key type (and curve) each algorithm needs: the algorithm comes from the issuer's
# allow-list and the key's own type, never from the token alone.
_KEY_FITS: dict[str, tuple[str, str | None]] = {
    **{a: ("RSA", None) for a in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
}
_EDDSA_CURVES = ("Ed25519", "Ed448")
# RFC 7518 3.3: RSA keys of 2048 bits or more; smaller ones can be factored.
MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class VerificationKey:
    key_id: str | None
    algorithm: str
    key: Any  # a cryptography public key (or HMAC secret bytes)

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        try:
            return bool(_ALGORITHMS[self.algorithm].verify(signing_input, self.key, signature))
        except (ValueError, TypeError, InvalidKeyError):
            return False


def fits(jwk: dict[str, Any], algorithm: str) -> bool:
    """True when this JWK may verify tokens signed with `algorithm`."""
    if jwk.get("use", "sig") != "sig" or "d" in jwk:  # encryption keys, leaked private keys
        return False
    ops = jwk.get("key_ops", ["verify"])
    if not isinstance(ops, list) or "verify" not in ops:  # a non-list raised TypeError here
        return False
    if jwk.get("alg", algorithm) != algorithm:
        return False
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if algorithm == "EdDSA":
        return kty == "OKP" and crv in _EDDSA_CURVES
    wanted = _KEY_FITS.get(algorithm)
    return wanted is not None and kty == wanted[0] and (wanted[1] is None or crv == wanted[1])


def prepare(jwks: dict[str, Any], algorithms: list[str]) -> tuple[list[VerificationKey], int]:
    """Verification keys for every (JWK, allowed algorithm) that fit; also how many were skipped."""
    prepared: list[VerificationKey] = []
    skipped = 0
    entries = jwks.get("keys") if isinstance(jwks, dict) else None
    for jwk in entries if isinstance(entries, list) else []:
        usable = [a for a in algorithms if isinstance(jwk, dict) and fits(jwk, a)]
        weak = False
        for algorithm in usable:
            try:
                key = _ALGORITHMS[algorithm].from_jwk(jwk)
            except (InvalidKeyError, ValueError, TypeError, KeyError):
                continue
            if isinstance(key, RSAPublicKey) and key.key_size < MIN_RSA_BITS:
                weak = True  # a test key left in the JWKS, say: forgeable, so no key at all
                continue
            kid = jwk.get("kid")
            prepared.append(VerificationKey(kid if isinstance(kid, str) else None, algorithm, key))
        skipped += 0 if usable and not weak else 1
    return prepared, skipped


def hmac_key(secret: bytes, algorithm: str) -> VerificationKey:
    return VerificationKey(None, algorithm, _ALGORITHMS[algorithm].prepare_key(secret))
