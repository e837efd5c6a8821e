"""observe/store_errors.describe: one line, bounded, every form of a secret masked; one under
4 characters is not (it would garble the message)."""

from __future__ import annotations

import pytest
from tenantgate.observe.store_errors import MAX_CHARS, describe, url_secrets


@pytest.mark.parametrize(("url", "said", "expected"), [
    pytest.param("redis://u:s3cr%2Fet@h:6379/0", "bad s3cr/et here",
                 "ConnectionError: bad *** here", id="decoded-userinfo"),
    pytest.param("redis://u:s3cr%2Fet@h:6379/0", "bad s3cr%2Fet here",
                 "ConnectionError: bad *** here", id="percent-encoded-userinfo"),
    pytest.param("redis://h:6379/0?password=p%40ss+word", "bad p@ss word",
                 "ConnectionError: bad ***", id="query-decoded"),
    pytest.param("redis://h:6379/0?password=p%40ss+word", "bad p%40ss+word",
                 "ConnectionError: bad ***", id="query-as-written"),
    pytest.param("redis://u:abcd@h:6379/0", "abcd at abcde",
                 "ConnectionError: *** at ***e", id="four-characters-masked"),
    pytest.param("redis://u:abc@h:6379/0", "abc at abcde",
                 "ConnectionError: abc at abcde", id="three-characters-left"),
    pytest.param("redis://h:6379/0", "nothing to mask",
                 "ConnectionError: nothing to mask", id="no-password"),
])
def test_the_password_is_masked_in_every_form(url: str, said: str, expected: str) -> None:
    assert describe(ConnectionError(said), url_secrets(url)) == expected


def test_a_configured_password_is_masked_as_given_and_decoded() -> None:
    said = describe(OSError("auth p%40ss-word and p@ss-word"), ["p%40ss-word"])
    assert said == "OSError: auth *** and ***"


@pytest.mark.parametrize(("said", "expected"), [
    pytest.param("first\nsecond", "ValueError: first second", id="newline"),
    pytest.param("a\r\n\tb", "ValueError: a b", id="crlf-tab"),
    pytest.param("x\x1b[31my\x00z", "ValueError: x [31my z", id="escape-and-nul"),
    pytest.param("p\u2028q", "ValueError: p q", id="unicode-line-separator"),
    pytest.param("", "ValueError", id="no-message"),
])
def test_the_description_is_one_line(said: str, expected: str) -> None:
    assert describe(ValueError(said)) == expected


def test_a_long_message_is_cut_to_the_cap() -> None:
    said = describe(RuntimeError("x" * 1000))
    assert len(said) == MAX_CHARS and said.startswith("RuntimeError: xxx") and said.endswith("...")
