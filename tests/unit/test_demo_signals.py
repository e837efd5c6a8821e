"""`tenantgate demo` and signals: what it stops, what it says and how it exits, with stand-in
components (each run is a child process, since the demo installs its own signal handlers)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from tenantgate.cli import demo
from tenantgate.testing import binaries

# The child replaces the real components with one stand-in "redis" whose stop is logged, then
# does what the scenario (argv[1]) says.
CHILD = r'''
import os, signal, sys, time
from tenantgate.cli import demo, main

scenario, log = sys.argv[1], open(sys.argv[2], "a", buffering=1)

def start_all(started, workdir, port):
    action = scenario
    if action == "second-signal":
        started.callback(log.write, "cleanup finished\n")  # runs last
        started.callback(lambda: (os.kill(os.getpid(), signal.SIGTERM),
                                  log.write("redis stopped\n")))
    else:
        started.callback(log.write, "redis stopped\n")
    if action in ("failed", "ready", "named"):
        demo._step(started, "redis", "stand-in")
    if action == "named":  # a second component, interrupted while it starts
        started.callback(log.write, "postgres stopped\n")
        action = "signal-SIGTERM"
    if action == "failed":
        raise demo._Failed("postgres: no luck")
    if action.startswith("signal-"):
        os.kill(os.getpid(), getattr(signal, action[len("signal-"):]))
        time.sleep(60)  # not reached: the signal stops the start-up
    return {}

def wait(seconds):
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C once ready
    time.sleep(60)  # not reached

demo._start_all = start_all
demo._print_guide = lambda info, port: print("ready", flush=True)
demo._wait = wait
sys.exit(main(["demo"]))
'''


def run_demo(scenario: str, tmp_path: Path) -> tuple[int, str, str, str]:
    log = tmp_path / "log"
    log.touch()
    # The timeout only bounds a hang; nothing here depends on how long anything takes.
    done = subprocess.run([sys.executable, "-c", CHILD, scenario, str(log)], capture_output=True,
                          text=True, timeout=60)
    match = re.search(r"files in (\S+)\)", done.stdout)
    assert match is not None, done.stdout + done.stderr
    assert not Path(match.group(1)).exists(), "the demo's directory was left behind"
    return done.returncode, done.stdout, done.stderr, log.read_text()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=lambda s: s.name)
def test_a_signal_during_start_up_stops_what_started_and_exits_128_plus_it(
        signum: signal.Signals, tmp_path: Path) -> None:
    # Before: exit 0 and "stopped Envoy, tenantgate, the backend, Postgres and Redis" after an
    # interrupted start; and with no SIGHUP handler, closing the terminal killed the demo and
    # left every child (each in its own session) running.
    code, out, err, log = run_demo(f"signal-{signum.name}", tmp_path)
    assert (code, err, log) == (128 + signum, "", "redis stopped\n")
    assert out.splitlines()[-1] == "tenantgate demo: stopped (nothing had started)"


def test_the_last_line_names_only_the_components_that_had_started(tmp_path: Path) -> None:
    # Before: always "stopped Envoy, tenantgate, the backend, Postgres and Redis". A component
    # whose start was cut short is stopped too, but it never said [ok].
    code, out, err, log = run_demo("named", tmp_path)
    assert (code, err, log) == (143, "", "postgres stopped\nredis stopped\n")
    assert out.splitlines()[-1] == "tenantgate demo: stopped Redis"


def test_a_second_signal_while_stopping_does_not_cut_the_clean_up_short(tmp_path: Path) -> None:
    # Before: the second signal raised inside the clean-up (a traceback, and a Postgres data
    # directory left behind).
    code, out, err, log = run_demo("second-signal", tmp_path)  # the first: Ctrl-C once ready
    assert (code, err, log) == (0, "", "redis stopped\ncleanup finished\n")
    assert out.splitlines()[-1] == "tenantgate demo: stopped (nothing had started)"


def test_ctrl_c_once_ready_is_a_normal_stop(tmp_path: Path) -> None:
    code, out, err, log = run_demo("ready", tmp_path)
    assert (code, err, log) == (0, "", "redis stopped\n")
    assert out.splitlines()[-2:] == ["ready", "tenantgate demo: stopped Redis"]


def test_a_component_that_fails_to_start_stops_the_others_and_exits_1(tmp_path: Path) -> None:
    code, out, err, log = run_demo("failed", tmp_path)
    assert (code, err, log) == (1, "", "redis stopped\n")
    assert out.splitlines()[-3:] == ["  [failed] postgres: no luck",
                                     "tenantgate demo: stopping what had started",
                                     "tenantgate demo: stopped Redis"]


def test_a_redis_server_that_fails_to_start_leaves_no_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: its close was registered only after a successful start.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(binaries, "redis_server_binary", lambda: "/bin/false")
    with pytest.raises(demo._Failed, match=r"^redis: "), demo._Started() as started:
        demo._start_redis(started)
    assert list(tmp_path.iterdir()) == []
