"""Identity: who a verified credential says the caller is."""

from __future__ import annotations

from dataclasses import dataclass

# The subjects API-key identities carry (`apikey:<key id>`). Backends see the subject without
# its issuer, so a JWT may not claim one: it would pass for that key's identity.
API_KEY_SUBJECT_PREFIX = "apikey:"


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
        # Subjects are free text in JWTs; only printable ASCII may reach a header. A subject
        # with a backslash is escaped too, or `\xe9` would read the same as `é` escaped.
        if self.subject.isascii() and self.subject.isprintable() and "\\" not in self.subject:
            return self.subject
        return self.subject.encode("unicode_escape").decode("ascii")
