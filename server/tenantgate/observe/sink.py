"""Where audit lines go, without ever making the event loop wait for a reader.

A regular file is written in place: a write to it waits for no reader (a hung network file
system would still hold it: keep an audit file local), and a line is in the file when Check
returns. Anything a reader drains (standard output in a container is a pipe to the
log collector; a FIFO, a socket, a terminal, a device) goes through a bounded queue that one
writer thread empties. A reader that stops (a blocking log driver, a stuck collector) used to
freeze the loop once the pipe held 64 KiB: every Check, ShouldRateLimit and health call with
it. Now the queue fills and lines are lost and counted instead.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import select
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from tenantgate.observe import metrics
from tenantgate.observe.throttle import Throttle

log = logging.getLogger("tenantgate.audit")

# Bytes, not lines: a line of escaped non-ASCII path is ~20 times a usual one, and the pod's
# memory limit is 256Mi. ~14,000 usual lines: some 7 s of both capped classes at the default cap.
MAX_QUEUED_BYTES = 4 * 1024 * 1024
FLUSH_AT_EXIT_SECONDS = 2.0  # what a stalled reader may hold up the end of the process
# What a stalled reader may keep a closed sink's thread, descriptor and queue alive: a reload
# closes the old sink, and without an end each reload left up to MAX_QUEUED_BYTES behind.
CLOSED_WRITER_GRACE_SECONDS = 2.0
ROTATION_CHECK_SECONDS = 1.0  # how often a file sink checks that its path is still its file
_POLL_MS = 200  # how often a writer waiting for its reader looks at the clock
_BATCH_BYTES = 4096  # PIPE_BUF: a write this size reaches a pipe whole, never interleaved
_COALESCE_SECONDS = 0.005  # lines arriving meanwhile share the writer's wake-up and write


class Sink(Protocol):
    def put(self, line: bytes) -> None: ...
    def close(self) -> None: ...
    def wait_closed(self, timeout: float) -> bool: ...


def open_sink(path: str, wait_for_reader: bool = True) -> Sink:
    """The sink for audit.path; "-" (standard output) is one sink for the whole process,
    which its users do not close. A FIFO without a reader is waited for, or with
    `wait_for_reader` False refused at once (OSError ENXIO, "a FIFO with no reader")."""
    if path == "-":
        return _stdout_sink()
    fd = _open(path, wait_for_reader)
    # Our own open file description, shared with nobody: anything but a regular file is left
    # non-blocking, so that the writer waits in poll() and can give up once closed (standard
    # output's is shared: left as is).
    os.set_blocking(fd, stat.S_ISREG(os.fstat(fd).st_mode))
    return _sink_for(fd, owned=True, path=path)


def _open(path: str, wait_for_reader: bool) -> int:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        # Non-blocking: a FIFO with no reader fails (ENXIO) instead of blocking the open, and
        # with it the event loop: a reload's open during a log collector's restart froze
        # every Check, health call and SIGTERM until a reader came back.
        return os.open(path, flags | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno != errno.ENXIO or not _is_fifo(path):
            raise  # ENXIO is also a socket file's: said as before
        if not wait_for_reader:
            raise OSError(errno.ENXIO, "a FIFO with no reader") from None
    return os.open(path, flags, 0o666)  # at start-up serve waits for the reader, as documented


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _sink_for(fd: int, owned: bool, path: str | None = None) -> Sink:
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return FileSink(fd, owned, path)
    return QueuedSink(fd, owned)


_stdout: Sink | None = None


def _stdout_sink() -> Sink:
    # Shared: the Runtimes before and after a reload both write, and their lines must not
    # interleave. Its users do not close it: the exit does (a copy of fd 1; stdout stays open).
    global _stdout
    if _stdout is None:
        _stdout = _sink_for(os.dup(1), owned=True)
    return _stdout


def _lost(count: int, why: str, said: Throttle, exc_info: bool) -> None:
    # The decision stands (the audit log records decisions, it does not make them); the lost
    # line is counted, alerted on (TenantgateAuditWriteErrors) and said once a minute.
    metrics.AUDIT_WRITE_ERRORS.inc(count)
    if said.ready():
        log.error("audit log %s: lines are being lost", why, exc_info=exc_info)


class FileSink:
    """A regular file, written with one unbuffered write per line (O_APPEND: whole lines,
    whatever else appends to the file): a line counted lost is never written later.

    Rotation: at most once a second, a line first checks that `path` still names the open
    file. logrotate's default moves the file away (and may delete it) and leaves the path
    empty or new: lines went on into the moved, or deleted, file, counted as written."""

    def __init__(self, fd: int, owned: bool, path: str | None = None) -> None:
        self._fd = fd
        self._owned = owned
        self._path = path  # None: not ours to reopen (standard output)
        self._checked_at = time.monotonic()
        self._orphaned = False  # rotated away, deleted, and the path cannot be opened again
        self._unwritable = Throttle(60.0)
        self._reopen_failing = Throttle(60.0)
        self._torn = _Torn()

    def put(self, line: bytes) -> None:
        if self._path is not None and time.monotonic() - self._checked_at >= ROTATION_CHECK_SECONDS:
            self._follow_rotation(self._path)
        if self._orphaned:
            _lost(1, "rotated, deleted and not reopened", self._unwritable, exc_info=False)
            return
        data = self._torn.mend(line)
        written = 0
        try:
            if (written := os.write(self._fd, data)) < len(data):  # a file that just filled
                _write_all(self._fd, data[written:], wait_writable=None)
            self._torn.after(data, len(data))
        except _PartialWrite as partial:
            self._torn.after(data, written + partial.written)
            _lost(1, "not writable", self._unwritable, exc_info=True)
        except OSError:  # disk full; EBADF once closed
            _lost(1, "not writable", self._unwritable, exc_info=True)

    def _follow_rotation(self, path: str) -> None:
        self._checked_at = time.monotonic()
        if self._fd < 0:
            return  # closed: the line is lost and counted, as before
        try:
            ours = os.fstat(self._fd)
            at_path = os.stat(path)
            if (at_path.st_dev, at_path.st_ino) == (ours.st_dev, ours.st_ino):
                return
            if not stat.S_ISREG(at_path.st_mode):
                return  # something else took the name: keep the file we have
        except FileNotFoundError:
            pass  # moved away and not yet replaced: start the new file
        except OSError:
            return
        try:
            fd = _open(path, wait_for_reader=False)  # as open_sink opens it, never waiting
        except OSError as exc:
            # Lines go on into the rotated file; once that is deleted too they reach nobody,
            # so they are counted lost (TenantgateAuditWriteErrors) rather than written.
            self._orphaned = ours.st_nlink == 0
            if self._reopen_failing.ready():
                log.warning("audit log %s was rotated and cannot be opened again (%s); lines "
                            "go on into the rotated file%s (said once a minute)", path,
                            exc.strerror, ", which is deleted: they are lost"
                            if self._orphaned else "")
            return
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # lost a race to a FIFO: not a file sink
            os.close(fd)
            return
        os.set_blocking(fd, True)
        old, self._fd = self._fd, fd
        if self._owned:
            os.close(old)
        self._owned = True
        self._orphaned = False
        log.info("audit log %s was rotated: writing to the new file", path)

    def close(self) -> None:
        fd, self._fd = self._fd, -1  # a later line fails, not lands in a reused descriptor
        if self._owned and fd >= 0:
            os.close(fd)

    def wait_closed(self, timeout: float) -> bool:
        return True


class QueuedSink:
    """A bounded queue and one daemon thread that writes it out, blocking only itself."""

    def __init__(self, fd: int, owned: bool) -> None:
        self._fd = fd
        self._owned = owned
        self._lines: deque[bytes] = deque()
        # Queued: put minus taken. Each count has one writer (put: the loop; taken: the
        # writer thread), so neither loses an update as a shared `+=` would.
        self._put_bytes = 0
        self._taken_bytes = 0
        self._wake = threading.Event()
        self._closing = False
        self._give_up_at = float("inf")  # monotonic; set by close()
        self._full = Throttle(60.0)
        self._unwritable = Throttle(60.0)
        self._torn = _Torn()
        # Lines refused by a full queue: counted by put (the loop), said by the writer thread,
        # so the loop never writes to standard error (whose reader may have stalled too).
        self._refused = 0
        self._refusals_said = 0
        self._thread = threading.Thread(target=self._run, name="tenantgate-audit", daemon=True)
        _open_queues.add(self)
        self._thread.start()

    def put(self, line: bytes) -> None:
        lines = self._lines
        size = len(line)
        if self._put_bytes - self._taken_bytes + size > MAX_QUEUED_BYTES or self._closing:
            metrics.AUDIT_WRITE_ERRORS.inc()
            self._refused += 1
            return
        self._put_bytes += size
        lines.append(line)
        if len(lines) == 1:  # the writer may be asleep: only the first line wakes it
            self._wake.set()

    def close(self) -> None:
        """Write what is queued, then close; returns at once (a stalled reader may never let
        the writer finish: it gives up CLOSED_WRITER_GRACE_SECONDS after this, counting what is
        left as lost, and the process's exit waits FLUSH_AT_EXIT_SECONDS at most)."""
        self._give_up_at = min(self._give_up_at, time.monotonic() + CLOSED_WRITER_GRACE_SECONDS)
        self._closing = True
        self._wake.set()

    def wait_closed(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()  # before draining: a line put from now on sets it again
            if not self._closing:
                time.sleep(_COALESCE_SECONDS)
            self._drain()
            self._say_refusals()
            if self._closing:
                self._drain()  # put() refuses lines once closing is set: none come after
                break
        if self._owned:
            os.close(self._fd)
        _open_queues.discard(self)

    def _drain(self) -> None:
        lines = self._lines
        while lines:
            batch = [lines.popleft()]
            size = len(batch[0])
            while lines and size + len(lines[0]) <= _BATCH_BYTES:
                size += len(lines[0])
                batch.append(lines.popleft())
            self._taken_bytes += size
            data = self._torn.mend(b"".join(batch))
            try:
                _write_all(self._fd, data, wait_writable=self._wait_writable)
                self._torn.after(data, len(data))
            except _PartialWrite as partial:
                self._torn.after(data, partial.written)
                lost = len(batch) - data.count(b"\n", 0, partial.written)
                _lost(lost, "not writable", self._unwritable, exc_info=True)

    def _wait_writable(self) -> bool:
        """Until the reader makes room: True, or False once closed and past the grace."""
        poller = select.poll()  # not select(): a descriptor past 1023 is fine here
        poller.register(self._fd, select.POLLOUT)
        # Past the grace, at once: every batch still queued asks, and each waiting a poll
        # kept a full queue's thread for minutes.
        while not (self._closing and time.monotonic() >= self._give_up_at):
            if poller.poll(_POLL_MS):
                return True
        return False

    def _say_refusals(self) -> None:
        if self._refused != self._refusals_said and self._full.ready():
            self._refusals_said = self._refused
            log.error("audit log reader is not keeping up: lines are being lost")


class _Torn:
    """Whether a failed write left part of a line behind: the next write then starts on a new
    line, so the fragment is not glued to a whole line counted as written."""

    __slots__ = ("torn",)

    def __init__(self) -> None:
        self.torn = False

    def mend(self, data: bytes) -> bytes:
        return b"\n" + data if self.torn else data

    def after(self, data: bytes, written: int) -> None:
        """After a write of `data` (mended) that got `written` bytes out."""
        if written:  # nothing out: whatever was torn still is
            self.torn = data[written - 1:written] != b"\n"


class _PartialWrite(OSError):
    def __init__(self, error: OSError, written: int) -> None:
        super().__init__(error.errno, error.strerror)
        self.written = written


def _write_all(fd: int, data: bytes, wait_writable: Callable[[], bool] | None) -> None:
    """On a non-blocking descriptor whose reader is behind, `wait_writable` waits for room
    (False: give up, the rest is lost); without it the rest is lost at once. Only the writer
    thread may wait."""
    written = 0
    view = memoryview(data)
    try:
        while written < len(data):
            try:
                written += os.write(fd, view[written:])
            except BlockingIOError:
                if wait_writable is None:
                    raise
                if not wait_writable():
                    raise OSError(errno.ETIMEDOUT, "the reader read nothing after the close") \
                        from None
    except OSError as exc:
        raise _PartialWrite(exc, written) from exc


_open_queues: set[QueuedSink] = set()


@atexit.register
def _flush_at_exit() -> None:
    """An orderly exit writes what is queued, for FLUSH_AT_EXIT_SECONDS at most in all."""
    deadline = time.monotonic() + FLUSH_AT_EXIT_SECONDS
    for sink in list(_open_queues):
        sink.close()
        sink.wait_closed(max(0.0, deadline - time.monotonic()))
