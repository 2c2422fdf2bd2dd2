"""Safe output: atomic file writes, output-location checks, and folders written as a unit.

* :func:`atomic_write` and :func:`write_text_atomic` write a temporary file in the destination
  folder, then ``os.replace`` it: a reader never sees a half-written file, and an interrupted write
  leaves the old file in place.
* :func:`check_output_dir` and :func:`check_output_file` turn an output location that cannot be
  written (a file where a folder is wanted, a path under a file, a read-only place, an empty
  string, ...) into one :class:`~circuits.errors.OutputError` sentence, so a command can fail
  before it does any work.
* :func:`run_folder` writes a folder as a unit under a lock (:func:`circuits.locks.output_lock`):
  the folder is written into a temporary sibling that replaces the target only when complete.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from circuits.errors import Interrupted, OutputError
from circuits.locks import file_age, output_lock, pid_alive, signals_deferred


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it onto ``path``.

    The folder is created if needed; the file gets mode 0644; on any error the temporary file is
    removed and the error re-raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, flushed to disk before the rename."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


# ------------------------------------------------------------------------------------ checks


def _given(path: str | os.PathLike[str] | None, what: str) -> tuple[Path, str]:
    """The absolute path and the path as given (for messages); an empty path is an error."""
    shown = "" if path is None else os.fspath(path)
    if not str(shown).strip():
        raise OutputError(f"{what} is empty: give the path to write to")
    return Path(os.path.abspath(shown)), str(shown)


def _place(p: Path, shown: str, what: str) -> Path:
    """The nearest existing folder above ``p``; an error when the nearest existing path is a file."""
    for above in p.parents:
        if os.path.lexists(above):
            if not os.path.isdir(above):
                raise OutputError(
                    f"{what} {shown} lies under {above}, which is a file, not a folder: choose another {what}"
                )
            return above
    return Path(p.anchor)


def _require_writable(folder: Path, shown: str, what: str) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(
            f"{what} {shown} cannot be written, because {folder} is read-only for this user: choose another {what}"
        )


def check_output_dir(
    path: str | os.PathLike[str] | None, what: str = "output folder", *, replaces: str | None = None
) -> Path:
    """Check that the folder ``path`` can be written; return it as an absolute path.

    Raises :class:`~circuits.errors.OutputError` (one sentence naming the path and what to do) when
    ``path`` is empty, is a file, lies under a file, or sits in a folder this user cannot write.
    ``what`` names the location in the message (such as ``"--out"``).

    ``replaces`` is for a folder that is replaced as a whole (:func:`run_folder`): its parent must be
    writable too, and an existing folder is only accepted when it is empty or holds the file named
    ``replaces`` (an earlier output of the same kind), and is neither the current folder nor one
    above it, so that a mistyped path never deletes unrelated files. Without ``replaces`` the folder
    is written into and its other files are kept. Nothing is created.
    """
    p, shown = _given(path, what)
    if os.path.lexists(p) and not os.path.isdir(p):
        raise OutputError(f"{what} {shown} is a file, not a folder: remove it or choose another {what}")
    above = _place(p, shown, what)
    if not os.path.isdir(p):
        _require_writable(above, shown, what)
        return p
    if replaces is None:
        _require_writable(p, shown, what)
        return p
    real = Path(os.path.realpath(p))
    cwd = Path(os.path.realpath(os.getcwd()))
    if real == cwd or real in cwd.parents:
        raise OutputError(
            f"{what} {shown} is the current folder or holds it, and it would be replaced as a whole: choose a folder inside it"
        )
    _require_writable(real.parent, shown, what)
    _require_writable(real, shown, what)
    entries = os.listdir(real)
    if entries and replaces not in entries:
        raise OutputError(
            f"{what} {shown} already holds files but no {replaces}, so it is not an earlier output and would be "
            f"replaced as a whole: give a new or empty folder"
        )
    return p


def check_output_file(path: str | os.PathLike[str] | None, what: str = "output file") -> Path:
    """Check that the file ``path`` can be written (atomically, beside it); return it as an absolute path.

    Raises :class:`~circuits.errors.OutputError` (one sentence naming the path and what to do) when
    ``path`` is empty, is a folder (or ends with a path separator), exists but is not a regular
    file, lies under a file, or its folder cannot be written by this user. Nothing is created.
    """
    p, shown = _given(path, what)
    if shown.endswith(("/", os.sep)) or os.path.isdir(p):
        raise OutputError(f"{what} {shown} is a folder, not a file: give the path of a file to write")
    if os.path.lexists(p) and not os.path.isfile(p):
        raise OutputError(f"{what} {shown} exists and is not a regular file: choose another {what}")
    _require_writable(_place(p, shown, what), shown, what)
    return p


# ------------------------------------------------------------------------------------ run folders


_SIBLING = re.compile(r"\.(tmp|old)-(\d+)-[0-9a-f]{8}")


def _sibling(target: Path, kind: str) -> Path:
    """A fresh name beside ``target``: ``NAME.tmp-<pid>-<random>`` (or ``.old-``)."""
    return target.parent / f"{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _tidy(target: Path) -> None:
    """Clear what a killed run left beside ``target`` (call with the lock held).

    Temporary siblings of processes that are gone (or of this one) are removed. When ``target``
    itself is missing and an ``.old-`` sibling is left, the process died between moving the old
    folder aside and moving the new one in (possible only where folders cannot be swapped at once,
    see :func:`run_folder`): the old folder is moved back first.
    """
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    left: list[tuple[str, Path]] = []
    for name in names:
        if not name.startswith(target.name):
            continue
        m = _SIBLING.fullmatch(name[len(target.name) :])
        if m and (int(m[2]) == os.getpid() or not pid_alive(int(m[2]))):
            left.append((m[1], target.parent / name))
    if not os.path.lexists(target):
        olds = sorted((p for kind, p in left if kind == "old"), key=file_age)
        if olds:
            os.rename(olds[0], target)
            left.remove(("old", olds[0]))
    for _, p in left:
        shutil.rmtree(p, ignore_errors=True)


def _fsync_path(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """Flush every file of ``folder`` and the folders themselves to disk."""
    for root, _, files in os.walk(folder):
        for name in files:
            _fsync_path(os.path.join(root, name))
        _fsync_path(root)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2: Callable[..., int] | bool | None = False  # False: not looked up yet


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``).

    False where the system or the file system cannot; other failures raise ``OSError``.
    """
    global _renameat2
    if _renameat2 is False:
        _renameat2 = None
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(None, use_errno=True).renameat2
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                fn.restype = ctypes.c_int
                _renameat2 = fn
            except (AttributeError, OSError):
                pass
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:  # type: ignore[operator]
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(staging: Path, target: Path) -> Path | None:
    """Put the complete folder ``staging`` at ``target``; return where the old folder now is (or None)."""
    if not os.path.lexists(target):
        os.rename(staging, target)
        return None
    if _exchange(staging, target):
        return staging
    old = _sibling(target, "old")
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)
        raise
    return old


@contextmanager
def run_folder(
    path: str | os.PathLike[str], what: str = "output folder", *, replaces: str | None = None
) -> Iterator[Path]:
    """Write the folder ``path`` as a unit: yield an empty temporary folder to write into, which
    replaces ``path`` only when the block completes.

    In order:

    1. :func:`check_output_dir` (with ``what`` and ``replaces``) and creation of the parent folders;
    2. the lock ``NAME.lock`` beside ``path`` (:func:`output_lock`), held until the end, so a second
       run into the same folder is refused with :class:`~circuits.errors.OutputLockedError`;
       leftovers of a killed run are cleared (see :func:`_tidy`);
    3. the temporary sibling ``NAME.tmp-<pid>-<random>`` is created (on the same file system, so
       the final move is a rename) and yielded;
    4. on success its files are flushed to disk and it takes the place of ``path``. An existing
       folder is replaced as a whole (files in it that the new run does not write are not kept).
       On Linux the two folders are swapped in one ``renameat2(RENAME_EXCHANGE)`` call, so there is
       no moment without a folder at ``path``; elsewhere the old folder is renamed aside and the new
       one renamed in, two renames in a row with SIGINT and SIGTERM held back between them, so the
       window without a folder is as short as two system calls, and a process killed in it (which
       only SIGKILL or a power cut can do) has its old folder moved back by the next run. The old
       folder is removed afterwards.

    On any exception in the block, ``KeyboardInterrupt`` included, the temporary folder is removed
    and ``path`` is left as it was; an interrupt is re-raised as :class:`~circuits.errors.Interrupted`
    whose message says so. The lock is released either way.
    """
    check_output_dir(path, what, replaces=replaces)
    shown = os.fspath(path)
    target = Path(os.path.realpath(shown))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{what} {shown} cannot be created ({err.strerror}): choose another {what}") from None
    with output_lock(target, what):
        _tidy(target)
        existed = os.path.isdir(target)
        staging = _sibling(target, "tmp")
        committed = False
        try:
            try:
                os.mkdir(staging)
            except OSError as err:
                raise OutputError(
                    f"{what} {shown} cannot be written ({err.strerror} in {target.parent}): choose another {what}"
                ) from None
            yield staging
            _fsync_tree(staging)
            with signals_deferred():
                old = _swap_in(staging, target)
                committed = True
                _fsync_path(str(target.parent))
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
        except BaseException as err:
            if committed:
                raise
            with signals_deferred(redeliver=False):
                shutil.rmtree(staging, ignore_errors=True)
            if isinstance(err, KeyboardInterrupt) and not isinstance(err, Interrupted):
                left = f"{shown} was left as it was" if existed else f"nothing was written to {shown}"
                raise Interrupted(left) from err
            raise
