"""Importing envoy-data-plane's generated messages without their import-time warning."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def generated_imports() -> Iterator[None]:
    # envoy-data-plane 2.2's generated classes use a pydantic form deprecated in 2.12; the warning
    # is theirs, and the suite turns warnings into errors.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield
