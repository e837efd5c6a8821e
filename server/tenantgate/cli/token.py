"""`tenantgate token`: development keys and JWTs for trying tenantgate out (not for production)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jwt

from tenantgate.cli.errors import non_utf8_option
from tenantgate.cli.numbers import positive_whole_seconds_at_most
from tenantgate.cli.paths import non_empty_path
from tenantgate.config.apikeys import MAX_LIFETIME_SECONDS
from tenantgate.testing import tokens


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "token", help="create a development signing key and mint JWTs",
        description="Development helpers: a local signing key, its JWKS, and JWTs signed "
                    "with it. Point an issuer's jwks.file at the JWKS to accept the tokens.")
    sub = parser.add_subparsers(dest="token_command", metavar="ACTION", required=True)

    create = sub.add_parser("create-key", help="write a private key (PEM) and its public JWKS",
                            description="Write a new private key (readable by its owner "
                                        "only) and the JWKS publishing its public half: both "
                                        "or neither. An existing regular file is replaced; "
                                        "anything else there (a symlink) is refused.")
    create.add_argument("--out", required=True, type=non_empty_path, metavar="KEY.pem")
    create.add_argument("--jwks-out", required=True, type=non_empty_path, metavar="JWKS.json")
    create.add_argument("--alg", default="ES256",
                        choices=["RS256", "PS256", "ES256", "ES384", "EdDSA"],
                        help="signing algorithm (default: ES256)")
    create.add_argument("--kid", default="dev-1", help="key id (default: dev-1)")
    create.set_defaults(handler=_create_key)

    mint = sub.add_parser("mint", help="print a JWT signed with a development key",
                          description="Print a signed JWT for the given issuer and tenant.")
    mint.add_argument("--key", required=True, type=non_empty_path, metavar="KEY.pem")
    mint.add_argument("--kid", default="dev-1", help="key id in the token's header (default: "
                      "dev-1)")
    mint.add_argument("--iss", required=True, help="issuer (must match the config's issuer)")
    mint.add_argument("--aud", required=True, help="audience")
    mint.add_argument("--tenant", required=True, help="tenant id to put in the tenant claim")
    mint.add_argument("--tenant-claim", default="tenant_id", help="claim name (default tenant_id)")
    mint.add_argument("--sub", default="dev-user", help="subject (default dev-user)")
    mint.add_argument("--scope", default="", help='space-separated scopes, e.g. "notes:read"')
    # A zero or negative ttl would mint a token that is already expired, and a huge one a
    # token tenantgate refuses (exp of 2**53 or more): at most 10 years, as `keys --ttl`.
    mint.add_argument("--ttl", type=positive_whole_seconds_at_most(MAX_LIFETIME_SECONDS,
                                                                   "10 years"),
                      default=3600, metavar="SECONDS",
                      help=f"seconds until exp, at most {MAX_LIFETIME_SECONDS} (10 years) "
                           "(default 3600)")
    mint.set_defaults(handler=_mint)


def _create_key(args: argparse.Namespace) -> int:
    if (option := non_utf8_option(args)) is not None:  # a --kid mint could never match
        print(f"tenantgate token: {option}: not valid UTF-8", file=sys.stderr)
        return 2
    if args.out.resolve() == args.jwks_out.resolve():  # the JWKS would replace the key
        print("tenantgate token: --out and --jwks-out must be different files", file=sys.stderr)
        return 2
    key = tokens.generate_key(args.alg)
    jwks = {"keys": [tokens.public_jwk(key, args.kid, args.alg)]}
    try:  # both files or neither: a key whose JWKS failed to write is of no use
        tokens.write_files([(args.out, tokens.key_pem(key), 0o600),
                            (args.jwks_out, (json.dumps(jwks, indent=2) + "\n").encode(), 0o666)])
    except OSError as exc:
        print(f"tenantgate token: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (private) and {args.jwks_out} (public JWKS, kid {args.kid})")
    return 0


_SET_BY_MINT = frozenset({"iss", "aud", "sub", "iat", "exp", "jti", "scope"})


def _mint(args: argparse.Namespace) -> int:
    if (option := non_utf8_option(args)) is not None:
        print(f"tenantgate token: {option}: not valid UTF-8", file=sys.stderr)
        return 2
    if args.tenant_claim in _SET_BY_MINT:
        # It would silently replace the claim mint sets (an `exp` of "acme", a second `sub`).
        print(f"tenantgate token: --tenant-claim: {args.tenant_claim!r} is a claim mint sets "
              f"itself ({', '.join(sorted(_SET_BY_MINT))}): choose another name", file=sys.stderr)
        return 2
    try:
        key = tokens.load_key(args.key)
    except ValueError as exc:  # it names the path
        print(f"tenantgate token: cannot load key: {exc}", file=sys.stderr)
        return 1
    extra = {"scope": args.scope} if args.scope else {}
    claims = tokens.claims(args.iss, args.aud, args.tenant, subject=args.sub, ttl=args.ttl,
                           tenant_claim=args.tenant_claim, **extra)
    try:
        # A key load_key accepts can still be one PyJWT cannot sign with (e.g. secp256k1).
        print(tokens.mint(key, tokens.algorithm_of(key), claims, kid=args.kid))
    except jwt.exceptions.PyJWTError as exc:
        return _cannot_sign(args.key, str(exc))
    except KeyError:  # algorithm_of: an EC curve without a JWT algorithm, e.g. P-192
        return _cannot_sign(args.key, "no JWT algorithm for this key's curve")
    return 0


def _cannot_sign(path: Path, why: str) -> int:
    print(f"tenantgate token: cannot sign with {path}: {why}", file=sys.stderr)
    return 1
