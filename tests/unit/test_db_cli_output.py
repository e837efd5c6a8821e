"""`tenantgate db` output to a reader that has gone: no traceback."""

from __future__ import annotations

import os
import subprocess
import sys


def test_print_sql_into_a_closed_pipe_exits_quietly() -> None:
    # `tenantgate db print-sql | head -1`, or `| true`: the reader is gone before the SQL is
    # written. That was a BrokenPipeError traceback (or, with the write buffered, Python's
    # "Exception ignored" at exit).
    read_end, write_end = os.pipe()
    os.close(read_end)  # before the command starts: every write fails, whatever the timing
    try:
        done = subprocess.run([sys.executable, "-m", "tenantgate.cli", "db", "print-sql"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (1, "")
