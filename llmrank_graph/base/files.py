"""Atomic writes: an output is either complete or absent, and is never replaced unless asked.

Every module that writes goes through here:

- :func:`atomic_file` writes one file; :func:`write_bytes_atomic`, :func:`write_text_atomic`,
  :func:`write_json_atomic` and :func:`save_safetensors_atomic` are built on it;
- :func:`atomic_directory` writes a directory;
- :func:`check_output_path` checks an output path before any work starts, so that a mistake
  costs a second, not minutes of loading and calibration.

How
---
The data go to a temporary sibling (same directory, hence same filesystem) named
``.NAME.tmp-HOST-PID-RANDOM``, renamed to ``NAME`` once complete.

- ``overwrite=False``: the final rename cannot replace anything (Linux ``renameat2`` with
  ``RENAME_NOREPLACE``; elsewhere a hard link for a file, an ``os.mkdir`` lock for a directory).
  When writers race for one path, exactly one wins; the others get
  :class:`~llmrank_graph.errors.OutputExistsError` and leave nothing behind.
- ``overwrite=True``: a file is replaced with ``os.replace``. A directory is swapped with the
  old one in one step (``RENAME_EXCHANGE``); where that is not available, the old directory is
  moved aside to ``.NAME.old-HOST-PID-RANDOM`` and put back if the final rename fails. A file
  is never replaced by a directory, nor a directory by a file.
- On any exception, KeyboardInterrupt included, the temporary is removed. In the main thread,
  while SIGTERM has its default action, a SIGTERM raises ``SystemExit(143)`` for the duration
  of the write, so a scheduler's kill cleans up as Ctrl-C does; the previous handler is put
  back afterwards. SIGINT and SIGTERM that arrive during the final renames are acted on once
  the renames are done.
- A writer killed with SIGKILL leaves its temporary behind. The next write to the same path
  removes every temporary sibling whose owner process (same host, pid in the name) is gone, and
  puts back a moved-aside old directory whose replacement never arrived.
- Permissions follow the umask (0o666 or 0o777 masked), not the 0o600/0o700 of
  ``mkstemp``/``mkdtemp``. Files are flushed to disk (fsync) before the rename.

This module sits below every stage: it imports only the errors and checks modules.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .checks import check_bool, check_choice, fail, fail_type
from ..errors import OutputExistsError

logger = logging.getLogger(__name__)

__all__ = ["OUTPUT_KINDS", "check_output_path", "atomic_file", "atomic_directory", "write_bytes_atomic",
           "write_text_atomic", "write_json_atomic", "save_safetensors_atomic"]

#: What an output path may be: values of ``kind`` in :func:`check_output_path`.
OUTPUT_KINDS: tuple[str, ...] = ("file", "directory")

#: Exit status after a SIGTERM during a write: 128 + 15, as a shell reports a SIGTERM death.
SIGTERM_EXIT_STATUS = 128 + 15

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
# renameat2 syscall numbers, for a glibc older than 2.28 that has no wrapper.
_SYS_RENAMEAT2 = {"x86_64": 316, "amd64": 316, "aarch64": 276, "arm64": 276}
# The portable fallback's lock is held for one rename; one this old was left by a dead writer.
_LOCK_STALE_S = 60.0
_LOCK_WAIT_S = 30.0

# Tests set this to False to exercise the portable fallback on Linux.
_use_renameat2 = True
_renameat2_impl: Callable[[bytes, bytes, int], int] | None = None
_renameat2_resolved = False

_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


# ---------------------------------------------------------------------------- output checks
def _as_output_path(path, arg: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise fail_type(arg, "a str or a path", path)
    target = Path(path).expanduser()
    if os.fspath(path) == "" or target.name in ("", ".", ".."):
        raise fail(arg, "a path that names a file or directory", os.fspath(path))
    return target


def _check_parent(target: Path, arg: str) -> None:
    """The nearest existing ancestor of ``target`` must be a writable directory."""
    ancestor = target.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise fail(arg, f"a path inside a directory ({str(ancestor)!r} is not a directory)", str(target))
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise fail(arg, f"a path inside a writable directory ({str(ancestor)!r} is not writable)", str(target))


def _flag(arg: str, name: str) -> str:
    """How the caller named ``arg`` asks for ``name``: ``--name`` on the command line, else ``name=True``."""
    return f"--{name}" if arg.startswith("--") else f"{name}=True"


def _check_existing(target: Path, kind: str, overwrite: bool, arg: str) -> None:
    if not os.path.lexists(target):
        return
    is_dir = target.is_dir()
    if kind == "directory" and not is_dir:
        raise OutputExistsError(f"`{arg}` {str(target)!r} exists and is not a directory; "
                                f"it is never replaced by one, even with {_flag(arg, 'overwrite')}")
    if kind == "file" and is_dir:
        raise OutputExistsError(f"`{arg}` {str(target)!r} exists and is a directory; "
                                f"it is never replaced by a file, even with {_flag(arg, 'overwrite')}")
    if not overwrite:
        raise OutputExistsError(f"`{arg}` {str(target)!r} already exists; pass {_flag(arg, 'overwrite')} to replace it")


def check_output_path(path: str | os.PathLike, *, kind: str = "file", overwrite: bool = False,
                      arg: str = "path") -> Path:
    """Check that ``path`` can be written as a ``kind``, before any work starts.

    Nothing is created. :func:`atomic_file` and :func:`atomic_directory` run the same checks
    themselves; call this first when the work before the write is long.

    Parameters
    ----------
    path : str or path-like
        The output path (``~`` is expanded).
    kind : {'file', 'directory'}
        What will be written there.
    overwrite : bool
        Whether an existing output of the same kind may be replaced.
    arg : str
        Name of the argument, for the messages (e.g. ``"--out"``).

    Returns
    -------
    pathlib.Path
        ``path`` with ``~`` expanded.

    Raises
    ------
    InvalidArgumentTypeError
        ``path`` is not a str or path-like.
    InvalidArgumentError
        ``path`` names no file (``""``, ``"/"``, ``".."``), or its nearest existing ancestor
        is not a writable directory.
    OutputExistsError
        ``path`` exists and ``overwrite`` is False, or it exists as the other kind (a file
        where a directory is to be written, or the reverse), whatever ``overwrite`` says.

    Example
    -------
    >>> check_output_path("pruned-model", kind="directory")   # doctest: +SKIP
    PosixPath('pruned-model')
    """
    check_choice("kind", kind, OUTPUT_KINDS)
    check_bool("overwrite", overwrite)
    target = _as_output_path(path, arg)
    _check_parent(target, arg)
    _check_existing(target, kind, overwrite, arg)
    return target


# ---------------------------------------------------------------------------- temporary siblings
def _prefix(name: str) -> str:
    # Sibling names stay under NAME_MAX (255 bytes) whatever the length of `name`.
    if len(os.fsencode(name)) <= 180:
        return "." + name
    return ".~" + hashlib.sha1(os.fsencode(name)).hexdigest()[:16]


def _sibling_name(name: str, role: str, pid: int | None = None) -> str:
    return f"{_prefix(name)}.{role}-{_HOST}-{os.getpid() if pid is None else pid}-{secrets.token_hex(4)}"


def _sibling_pattern(name: str) -> re.Pattern:
    return re.compile(re.escape(_prefix(name)) + r"\.(tmp|old)-([0-9a-f]{8})-([0-9]+)-[0-9a-f]{8}\Z")


def _new_sibling(target: Path, role: str, *, directory: bool) -> Path:
    """Create an empty temporary sibling of ``target``, with the umask's permissions."""
    while True:
        tmp = target.parent / _sibling_name(target.name, role)
        try:
            if directory:
                os.mkdir(tmp, 0o777)  # 0o777 & ~umask, where mkdtemp would give 0o700
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no safe liveness probe (os.kill(pid, 0) sends CTRL_C on Windows): keep it
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, owned by another user
        return True
    return True


def _remove(path: Path) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _sweep_stale(target: Path) -> None:
    """Remove the temporary siblings of ``target`` left by writers that are gone (kill -9)."""
    pattern = _sibling_pattern(target.name)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    for name in names:
        m = pattern.match(name)
        if m is None or m.group(2) != _HOST or _pid_alive(int(m.group(3))):
            continue
        path = target.parent / name
        if m.group(1) == "old" and not os.path.lexists(target):
            # The writer died between moving the previous output aside and renaming the new one
            # in: the previous output is the only copy. Put it back.
            try:
                _rename_noreplace(path, target)
            except OSError:
                pass
            else:
                logger.warning("put back %s, which process %s had moved aside to %s before it died",
                               target, m.group(3), path)
                continue
        logger.info("removing %s, left behind by process %s, which is gone", path, m.group(3))
        _remove(path)


# ---------------------------------------------------------------------------- signals
def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _on_sigterm(signum, frame) -> None:
    raise SystemExit(SIGTERM_EXIT_STATUS)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """For the duration, SIGTERM raises SystemExit (so ``finally`` blocks run) instead of killing.

    Only in the main thread (the only one where Python runs signal handlers) and only while
    SIGTERM has its default action: an ignored SIGTERM, a handler of the caller's own or of an
    enclosing write, or one set outside Python, is left alone.
    """
    if not _in_main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM during the block, then act on them: renames are not cut in half.

    Only the handlers that raise (Python's SIGINT handler, :func:`_on_sigterm`) are held.
    """
    if not _in_main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum, frame):
        pending.append(signum)

    saved = {}
    known = [(signal.SIGINT, signal.default_int_handler)]
    if hasattr(signal, "SIGTERM"):
        known.append((signal.SIGTERM, _on_sigterm))
    for sig, handler in known:
        if signal.getsignal(sig) is handler:
            saved[sig] = handler
            signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(pending):
            saved[sig](sig, None)


# ---------------------------------------------------------------------------- renames
def _resolve_renameat2() -> Callable[[bytes, bytes, int], int] | None:
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    fn = getattr(libc, "renameat2", None)
    if fn is not None:  # glibc >= 2.28
        fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
        fn.restype = ctypes.c_int
        return lambda src, dst, flags: fn(_AT_FDCWD, src, _AT_FDCWD, dst, flags)
    number = _SYS_RENAMEAT2.get(platform.machine().lower())
    syscall = getattr(libc, "syscall", None)
    if number is None or syscall is None:
        return None
    syscall.restype = ctypes.c_long
    # syscall() reads every argument as a long.
    return lambda src, dst, flags: syscall(ctypes.c_long(number), ctypes.c_long(_AT_FDCWD), ctypes.c_char_p(src),
                                           ctypes.c_long(_AT_FDCWD), ctypes.c_char_p(dst), ctypes.c_long(flags))


def _renameat2_available() -> bool:
    """Whether this system has renameat2 (a filesystem may still refuse a flag)."""
    global _renameat2_impl, _renameat2_resolved
    if not _renameat2_resolved:
        _renameat2_impl, _renameat2_resolved = _resolve_renameat2(), True
    return _renameat2_impl is not None


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``: True when done, False when not available here.

    Raises the OSError of a real failure (FileExistsError, FileNotFoundError, ...).
    """
    if not _use_renameat2 or not _renameat2_available():
        return False
    if _renameat2_impl(os.fsencode(src), os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # old kernel, or a filesystem without this flag
    raise OSError(err, os.strerror(err), os.fspath(src), None, os.fspath(dst))


@contextlib.contextmanager
def _rename_lock(dst: Path) -> Iterator[None]:
    """The portable fallback's lock: a directory beside ``dst``, made with ``os.mkdir`` (atomic)."""
    lock = dst.parent / f"{_prefix(dst.name)}.lock"
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        try:
            os.mkdir(lock)
            break
        except FileExistsError:
            pass
        try:
            stale = time.time() - os.stat(lock).st_mtime > _LOCK_STALE_S
        except FileNotFoundError:
            continue
        if stale:  # it is held for one rename: its writer died holding it
            with contextlib.suppress(OSError):
                os.rmdir(lock)
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {_LOCK_WAIT_S:.0f} s for the lock {str(lock)!r}; "
                               "remove it if no other writer is running")
        time.sleep(0.005)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(lock)


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; FileExistsError if ``dst`` exists, even if it appeared just now."""
    if _renameat2(src, dst, _RENAME_NOREPLACE):
        return
    if not os.path.isdir(src) or os.path.islink(src):
        try:
            os.link(src, dst)  # a hard link never replaces
        except FileExistsError:
            raise
        except OSError:
            pass  # no hard links on this filesystem: take the lock
        else:
            os.unlink(src)
            return
    # Serialises the writers of this module; another program could still slip in between.
    with _rename_lock(dst):
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(dst))
        os.rename(src, dst)


def _appeared(target: Path, arg: str) -> OutputExistsError:
    return OutputExistsError(f"`{arg}` {str(target)!r} already exists (it was created while this write was in "
                             f"progress, and was left as it is); pass {_flag(arg, 'overwrite')} to replace it")


def _replace_aside(tmp: Path, target: Path) -> None:
    """Replace the directory ``target`` by ``tmp``: move it aside, rename, put it back on failure."""
    old = target.parent / _sibling_name(target.name, "old")
    _rename_noreplace(target, old)
    try:
        _rename_noreplace(tmp, target)
    except BaseException:
        try:
            _rename_noreplace(old, target)
        except OSError:
            logger.error("could not put the previous %s back; it is at %s", target, old)
        raise
    _remove(old)


def _publish_directory(tmp: Path, target: Path, overwrite: bool, arg: str,
                       check_existing: Callable[[Path], None] | None) -> None:
    if not overwrite:
        try:
            _rename_noreplace(tmp, target)
        except FileExistsError:
            raise _appeared(target, arg) from None
        return
    while True:
        if not os.path.lexists(target):
            try:
                _rename_noreplace(tmp, target)
                return
            except FileExistsError:
                continue  # created meanwhile: replace it below
        _check_existing(target, "directory", True, arg)
        if check_existing is not None:
            check_existing(target)
        try:
            if _renameat2(tmp, target, _RENAME_EXCHANGE):
                return  # `tmp` now holds the previous directory; the caller removes it
        except FileNotFoundError:
            continue  # removed meanwhile
        _replace_aside(tmp, target)
        return


# ---------------------------------------------------------------------------- durability
def _fsync(path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return  # some systems cannot open a directory
        raise
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF):
            raise  # a real write error (EIO, ENOSPC) must not pass as success
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                _fsync(p)
        _fsync(dirpath, directory=True)


# ---------------------------------------------------------------------------- writers
@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, overwrite: bool = False, arg: str = "path") -> Iterator[Path]:
    """Write a file atomically: yield a temporary sibling path, rename it to ``path`` on success.

    The temporary file exists (empty, with the umask's permissions) when the block starts;
    write it by name. On success it is flushed to disk and renamed to ``path``; on any
    exception (KeyboardInterrupt and, in the main thread, SIGTERM included) it is removed and
    ``path`` is left as it was. Parent directories are created.

    Parameters
    ----------
    path : str or path-like
        The file to write.
    overwrite : bool
        Replace an existing file. With False the final rename cannot replace a file that
        appeared during the write either.
    arg : str
        Name of the argument, for the messages.

    Yields
    ------
    pathlib.Path
        The temporary file to write.

    Raises
    ------
    OutputExistsError
        ``path`` exists (or appears during the write) and ``overwrite`` is False, or ``path``
        is a directory.
    InvalidArgumentError, InvalidArgumentTypeError
        As :func:`check_output_path`.

    Example
    -------
    >>> with atomic_file("scores.npy") as tmp:          # doctest: +SKIP
    ...     np.save(tmp, scores, allow_pickle=False)
    """
    target = check_output_path(path, kind="file", overwrite=overwrite, arg=arg)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(target)
    tmp = None
    with _sigterm_raises():
        try:
            tmp = _new_sibling(target, "tmp", directory=False)
            yield tmp
            _fsync(tmp)
            with _signals_held():
                if overwrite:
                    _check_existing(target, "file", True, arg)
                    os.replace(tmp, target)
                else:
                    try:
                        _rename_noreplace(tmp, target)
                    except FileExistsError:
                        raise _appeared(target, arg) from None
            _fsync(target.parent, directory=True)
        finally:
            if tmp is not None and os.path.lexists(tmp):
                _remove(tmp)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False, arg: str = "directory",
                     check_existing: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Write a directory atomically: yield a temporary sibling directory, rename it into place.

    On success the files are flushed to disk and the directory is renamed to ``path``. On any
    exception (KeyboardInterrupt and, in the main thread, SIGTERM included) it is removed and
    ``path`` is left as it was. Parent directories are created; temporaries left by writers
    that were killed are swept first (see the module docstring).

    Parameters
    ----------
    path : str or path-like
        The directory to write.
    overwrite : bool
        Replace an existing directory (never a file). With False the final rename cannot
        replace a directory that appeared during the write either: of concurrent writers,
        exactly one succeeds.
    arg : str
        Name of the argument, for the messages.
    check_existing : callable, optional
        Called with ``path`` before an existing directory is replaced (at the start and again
        just before the rename); it raises to refuse, e.g. when the directory was not written
        by this library.

    Yields
    ------
    pathlib.Path
        The temporary directory to fill.

    Raises
    ------
    OutputExistsError
        ``path`` exists (or appears during the write) and ``overwrite`` is False, or ``path``
        is a file (whatever ``overwrite`` says).
    InvalidArgumentError, InvalidArgumentTypeError
        As :func:`check_output_path`.

    Example
    -------
    >>> with atomic_directory("pruned-model", overwrite=True) as tmp:   # doctest: +SKIP
    ...     model.save_pretrained(tmp)
    """
    target = check_output_path(path, kind="directory", overwrite=overwrite, arg=arg)
    if check_existing is not None and target.is_dir():
        check_existing(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(target)
    _check_existing(target, "directory", overwrite, arg)  # a swept writer's output may be back
    tmp = None
    with _sigterm_raises():
        try:
            tmp = _new_sibling(target, "tmp", directory=True)
            yield tmp
            _fsync_tree(tmp)
            with _signals_held():
                _publish_directory(tmp, target, overwrite, arg, check_existing)
            _fsync(target.parent, directory=True)
        finally:
            # After an exchange `tmp` holds the previous directory; otherwise the unfinished one.
            with _signals_held():
                if tmp is not None and os.path.lexists(tmp):
                    _remove(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, overwrite: bool = False,
                       arg: str = "path") -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`). Returns the path."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise fail_type("data", "bytes", data)
    with atomic_file(path, overwrite=overwrite, arg=arg) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path).expanduser()


def write_text_atomic(path: str | os.PathLike, text: str, *, encoding: str = "utf-8", overwrite: bool = False,
                      arg: str = "path") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_file`). Returns the path."""
    if not isinstance(text, str):
        raise fail_type("text", "a str", text)
    return write_bytes_atomic(path, text.encode(encoding), overwrite=overwrite, arg=arg)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = False,
                      overwrite: bool = False, arg: str = "path") -> Path:
    """Write ``obj`` as UTF-8 JSON (and a final newline) to ``path`` atomically. Returns the path."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n"
    return write_text_atomic(path, text, overwrite=overwrite, arg=arg)


def save_safetensors_atomic(tensors: Mapping, path: str | os.PathLike, metadata: dict[str, str], *,
                            overwrite: bool = False, arg: str = "path") -> Path:
    """Write ``tensors`` to ``path`` as safetensors, atomically (see :func:`atomic_file`).

    Returns the path.
    """
    from safetensors.torch import save_file

    with atomic_file(path, overwrite=overwrite, arg=arg) as tmp:
        save_file(dict(tensors), str(tmp), metadata=metadata)
    return Path(path).expanduser()
