"""The lock of an output folder, and signals held back while a step must not be cut in half.

* :func:`output_lock` holds ``NAME.lock`` beside an output folder for a block (:func:`lock_path`
  names it); a second run into the same folder is refused with
  :class:`~circuits.errors.OutputLockedError`, and a lock whose process is gone is taken over.
* :func:`signals_deferred` holds back SIGINT and SIGTERM for a block and delivers the first one
  after it.
* :func:`pid_alive` and :func:`file_age` tell whether a process still runs and how old a file is,
  which decide whether what a run left behind is stale.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any

from circuits.errors import OutputError, OutputLockedError

# ------------------------------------------------------------------------------------ signals


_DEFERRED_SIGNALS = tuple(
    s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None
)


@contextmanager
def signals_deferred(redeliver: bool = True) -> Iterator[None]:
    """Hold back SIGINT and SIGTERM for the block, then deliver the first one that came.

    Python runs signal handlers in the main thread only, so in the main thread the handlers are
    swapped for one that records the signal; after the block the old handlers come back and a
    recorded signal is raised again (``redeliver=False``, used while an error is already on its way
    out, drops it). In other threads nothing is needed: no ``KeyboardInterrupt`` is raised there.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def record(signum: int, frame: object) -> None:
        caught.append(signum)

    previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}
    try:
        for s in _DEFERRED_SIGNALS:
            handler = signal.getsignal(s)
            if handler is not None:  # None: set outside Python, and it could not be put back
                previous[s] = signal.signal(s, record)
        yield
    finally:
        for s, saved in previous.items():
            signal.signal(s, saved)
        if caught and redeliver:
            signal.raise_signal(caught[0])


# ------------------------------------------------------------------------------------ the lock


_BREAK_AFTER_SECONDS = 10.0  # an unreadable lock (or a stale-lock breaker) older than this is abandoned


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file of the output folder ``target``: ``NAME.lock`` beside it."""
    target = Path(target)
    return target.parent / f"{target.name}.lock"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a process of another user counts)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill would terminate it; assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, as another user's
        return True
    return True


def _parse_lock(text: str) -> tuple[int, str] | None:
    try:
        info = json.loads(text)
        return int(info["pid"]), str(info["host"])
    except (ValueError, KeyError, TypeError):
        return None


def _read_lock(lock: Path) -> str | None:
    """The lock file's text, or None when it is gone."""
    try:
        return lock.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None


def _create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` (O_CREAT|O_EXCL); False when it exists already."""
    with signals_deferred():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, text.encode("utf-8"))
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
    return True


def file_age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _held(lock: Path, text: str) -> bool:
    """Whether the lock holding ``text`` belongs to a running process."""
    holder = _parse_lock(text)
    if holder is None:  # being written this instant, or left empty by a crash right after it was created
        return file_age(lock) < _BREAK_AFTER_SECONDS
    pid, host = holder
    if host != socket.gethostname():  # a process elsewhere cannot be checked from here
        return True
    return pid_alive(pid)


def _break_stale(lock: Path, text: str) -> None:
    """Remove the stale ``lock`` if it still holds ``text``.

    Only one process at a time breaks a lock (it holds ``NAME.lock.break`` meanwhile), and it checks
    again that the lock is the stale one it read, so two runs finding the same stale lock cannot
    both take it: the second one finds the first one's fresh lock instead.
    """
    breaker = lock.with_name(lock.name + ".break")
    if not _create_exclusive(breaker, f"{os.getpid()}\n"):
        if file_age(breaker) > _BREAK_AFTER_SECONDS:
            breaker.unlink(missing_ok=True)
        else:
            time.sleep(0.05)
        return
    try:
        if _read_lock(lock) == text:
            lock.unlink(missing_ok=True)
    finally:
        breaker.unlink(missing_ok=True)


def _describe_holder(text: str) -> str:
    holder = _parse_lock(text)
    if holder is None:
        return "a process that is creating it"
    pid, host = holder
    return f"process {pid} on {host}"


def _acquire(lock: Path, target: Path, what: str) -> None:
    mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "folder": str(target)}) + "\n"
    for _ in range(20):
        try:
            if _create_exclusive(lock, mine):
                return
        except OSError as err:
            raise OutputError(
                f"{what} {target} cannot be written ({err.strerror} when creating its lock file {lock}): choose another {what}"
            ) from None
        try:
            text = _read_lock(lock)
        except OSError as err:
            raise OutputLockedError(
                f"{target} is locked by {lock}, which cannot be read ({err.strerror}): wait for the other run, or remove the lock file"
            ) from None
        if text is None:  # released meanwhile: try again
            continue
        if _held(lock, text):
            raise OutputLockedError(
                f"{target} is being written by another run ({_describe_holder(text)}, lock file {lock}): wait for it to "
                f"finish, or remove the lock file if that process is not writing there"
            )
        try:
            _break_stale(lock, text)
        except OSError as err:
            raise OutputLockedError(
                f"{target} is locked by {lock}, whose process is gone, but the lock cannot be removed ({err.strerror}): remove it"
            ) from None
    raise OutputLockedError(
        f"{target} is being locked by other runs right now (lock file {lock}): try again when they finish"
    )


def _release(lock: Path) -> None:
    try:
        text = _read_lock(lock)
    except OSError:
        return
    if text is not None and _parse_lock(text) == (os.getpid(), socket.gethostname()):
        # OSError: the folder's permissions changed during the run, so the lock is left, stale
        with suppress(OSError):
            lock.unlink(missing_ok=True)


@contextmanager
def output_lock(target: str | os.PathLike[str], what: str = "output folder") -> Iterator[Path]:
    """Hold the lock of the output folder ``target`` for the block; yield the lock file.

    The lock is the file ``NAME.lock`` beside ``target`` (its folder must exist), created with
    ``O_CREAT | O_EXCL`` and holding this process's id and host name. A lock held by a running
    process (this one included) raises :class:`~circuits.errors.OutputLockedError`; a lock whose
    process is gone (same host, ``os.kill(pid, 0)`` finds no such process) is stale and taken over.
    The lock is removed when the block ends, however it ends. ``what`` names ``target`` in the
    message when the lock file cannot be created.
    """
    target = Path(target)
    lock = lock_path(target)
    _acquire(lock, target, what)
    try:
        yield lock
    except BaseException:
        with signals_deferred(redeliver=False):
            _release(lock)
        raise
    with signals_deferred():
        _release(lock)
