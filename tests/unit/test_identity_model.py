"""The subject header: one value per subject, still one after HTTP trims the value, and never
an API key's."""

from __future__ import annotations

import codecs
import itertools

import pytest
from tenantgate.identity.model import API_KEY_SUBJECT_PREFIX, Identity

API_KEY_SUBJECT = API_KEY_SUBJECT_PREFIX + "0123456789abcdef"
SUBJECTS = [" " + API_KEY_SUBJECT, "\t" + API_KEY_SUBJECT, API_KEY_SUBJECT + " ", " alice",
            "alice", "alice ", "  alice  ", " ", "  ", "\t", " \t", "\talice", "\\talice",
            "\\x20alice", "\u00e9 ", " \u00e9", "\\xe9", "a b"]


def header_value(subject: str) -> str:
    return Identity(issuer="idp", subject=subject, tenant_claim="acme", scopes=frozenset(),
                    roles=frozenset(), key_id="k1", expires_at=None).subject_header_value


def as_received(value: str) -> str:
    """What a backend reads: HTTP drops spaces and tabs around a field value (RFC 9110 5.5)."""
    return value.strip(" \t")


def test_subjects_keep_distinct_header_values_after_http_trims_them() -> None:
    received = {subject: as_received(header_value(subject)) for subject in SUBJECTS}
    for one, other in itertools.combinations(SUBJECTS, 2):
        assert received[one] != received[other], (one, other)


@pytest.mark.parametrize("subject", SUBJECTS, ids=repr)
def test_no_other_subject_arrives_as_an_api_keys_subject(subject: str) -> None:
    received = as_received(header_value(subject))
    assert received != header_value(API_KEY_SUBJECT)
    # Only a subject that starts so (which no JWT may claim) arrives with the prefix.
    assert received.startswith(API_KEY_SUBJECT_PREFIX) == subject.startswith(API_KEY_SUBJECT_PREFIX)


@pytest.mark.parametrize("subject", SUBJECTS, ids=repr)
def test_a_header_value_has_nothing_http_trims_and_decodes_back(subject: str) -> None:
    value = header_value(subject)
    assert value == as_received(value) and value.isascii() and value.isprintable()
    assert codecs.decode(value, "unicode_escape") == subject


@pytest.mark.parametrize("subject, value", [
    ("alice", "alice"), ("a b", "a b"), (API_KEY_SUBJECT, API_KEY_SUBJECT),
    (" alice", "\\x20alice"), ("alice  ", "alice\\x20\\x20"), (" ", "\\x20"),
    ("\talice", "\\talice"), ("\u00e9 ", "\\xe9\\x20"),
], ids=repr)
def test_printable_ascii_is_plain_and_edge_spaces_are_escaped(subject: str, value: str) -> None:
    assert header_value(subject) == value
