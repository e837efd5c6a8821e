"""The reference notes backend refuses a bad --dsn or --listen at start, in one line."""

from __future__ import annotations

import pytest
from tenantgate.backend.httpserver import WSGIHTTPServer
from tenantgate.backend.notes_app import main


@pytest.mark.parametrize(("argv", "message"), [
    # It printed "listening", then every request failed with psycopg's ProgrammingError.
    (["--dsn", "nonsense", "--listen", "127.0.0.1:0"],
     'error: --dsn: missing "=" after "nonsense" in connection info string\n'),
    # It ended in socket's OverflowError traceback.
    (["--dsn", "dbname=x", "--listen", "127.0.0.1:99999"],
     "error: --listen must be host:port (port 0-65535)\n"),
    (["--dsn", "dbname=x", "--listen", "127.0.0.1:" + "9" * 5000],
     "error: --listen must be host:port (port 0-65535)\n"),
], ids=["dsn-nonsense", "port-99999", "port-5000-digits"])
def test_a_bad_dsn_or_listen_address_is_one_error_line_and_exit_2(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Should it get that far, it stops at once instead of serving for ever.
    monkeypatch.setattr(WSGIHTTPServer, "serve_forever", lambda self: None)
    assert main(argv) == 2
    assert capsys.readouterr() == ("", message)
