"""Identity: who a verified credential says the caller is."""

from __future__ import annotations

import re
from dataclasses import dataclass

# The subjects API-key identities carry (`apikey:<key id>`). Backends see the subject without
# its issuer, so a JWT may not claim one: it would pass for that key's identity.
API_KEY_SUBJECT_PREFIX = "apikey:"
_EDGE_SPACES = re.compile(r"^ +| +$")


class NotAString:
    """A tenant claim that was not a string (a list, an object, a number), in place of it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<tenant claim that is not a string>"


NOT_A_STRING = NotAString()


@dataclass(frozen=True, slots=True)
class Identity:
    issuer: str  # issuer name from config, or "api-key"
    subject: str
    tenant_claim: object  # the claim's string (tenancy validates it), None, or NOT_A_STRING
    scopes: frozenset[str]
    roles: frozenset[str]
    key_id: str  # JWT kid or API key id, for the audit log
    expires_at: float | None  # when it stops being accepted (exp, or sooner by max_token_age)

    @property
    def subject_header_value(self) -> str:
        # Subjects are free text in JWTs; only printable ASCII may reach a header, and one
        # subject's value must never read as another's. Anything else is escaped as
        # unicode_escape spells it (it decodes back), always with a backslash, which a plain
        # value never has: a subject with a backslash is escaped too, or `\xe9` would read the
        # same as `é` escaped. A space at either end is escaped as `\x20`: HTTP drops spaces and
        # tabs around a field value (RFC 9110 5.5), so " alice" would arrive as "alice" (tabs
        # are escaped as `\t` already).
        subject = self.subject
        if (subject.isascii() and subject.isprintable() and "\\" not in subject
                and not subject.startswith(" ") and not subject.endswith(" ")):
            return subject
        escaped = subject.encode("unicode_escape").decode("ascii")
        return _EDGE_SPACES.sub(lambda spaces: "\\x20" * len(spaces.group()), escaped)
