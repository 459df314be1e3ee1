"""One run per output: a lock file ``.<name>.lock`` beside the output while a run writes it.

The lock is created atomically (``O_CREAT | O_EXCL``) and holds JSON with the run's pid, host
name and start time; it is removed when the run ends, however it ends (an exception, Ctrl-C,
a closed generator). A lock left by a killed run (``kill -9``, a crash) names a pid that is no
longer alive on this host: the next run takes it over. A lock from another host is always
respected, as its pid cannot be checked from here.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

#: an unreadable lock (its writer killed between creating and filling it) older than this is stale
UNREADABLE_STALE_S = 60.0


class OutputLockedError(FileExistsError):
    """Another live run holds the lock of this output."""


@dataclass(frozen=True)
class OutputLock:
    """A held lock: its file, and what a stale lock taken over said (None if there was none)."""

    path: Path
    taken_over: dict | None = None

    @property
    def notice(self) -> str | None:
        """One line about the stale lock taken over, or None."""
        if self.taken_over is None:
            return None
        return (f"took over the stale lock {self.path} of a run that is gone "
                f"({_holder(self.taken_over)})")


def lock_path(output: str | os.PathLike) -> Path:
    """The lock file of ``output``: ``.<name>.lock`` in the same folder."""
    output = Path(output)
    return output.parent / f".{output.name}.lock"


def _holder(info: dict) -> str:
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, since {info.get('started', '?')}"


def _read(path: Path) -> dict | None:
    """The lock's JSON, {} for an unreadable one, None if it is gone."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        info = json.loads(text)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def is_stale(info: dict, path: Path) -> bool:
    """True if the lock ``info`` (read from ``path``) names a run that is gone."""
    pid = info.get("pid")
    if not isinstance(pid, int) or "host" not in info:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        return age > UNREADABLE_STALE_S
    return info["host"] == socket.gethostname() and not _pid_alive(pid)


def _create(path: Path) -> bool:
    """Create the lock with this run's JSON; False if it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(info))
    return True


def acquire(output: str | os.PathLike) -> OutputLock:
    """Take the lock of ``output`` (its folder is created); raises :class:`OutputLockedError`
    naming the holder when a live run has it. Release with :func:`release`."""
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    taken_over = None
    for _ in range(3):  # a stale lock removed, then created anew: races with another run retried
        if _create(path):
            return OutputLock(path, taken_over)
        info = _read(path)
        if info is None:  # released in between
            continue
        if not is_stale(info, path):
            raise OutputLockedError(
                f"output {os.fspath(output)} is being written by another run ({_holder(info)}); wait for it "
                f"to finish, or delete {path} if that run is gone")
        if _read(path) == info:  # still the stale one (not a lock just made by another run)
            path.unlink(missing_ok=True)
            taken_over = info
    raise OutputLockedError(f"output {os.fspath(output)}: could not take its lock {path} (other runs keep "
                            f"taking it); delete {path} if no run is writing this output")


def release(lock: OutputLock) -> None:
    """Remove the lock file if it is still this process's."""
    info = _read(lock.path)
    if info is not None and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
        lock.path.unlink(missing_ok=True)


@contextmanager
def output_lock(output: str | os.PathLike) -> Iterator[OutputLock]:
    """Hold the lock of ``output`` for the ``with`` block (see :func:`acquire`)."""
    lock = acquire(output)
    try:
        yield lock
    finally:
        release(lock)
