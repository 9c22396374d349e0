"""Renames that never replace by accident, and the temporary siblings they publish.

The atomic writers of :mod:`llmrank_graph.base.files` write into a temporary sibling of the
output (same directory, hence same filesystem) named ``.NAME.tmp-HOST-PID-RANDOM`` and publish
it with one of these renames:

- :func:`rename_noreplace` cannot replace anything: Linux ``renameat2`` with
  ``RENAME_NOREPLACE``; elsewhere a hard link for a file, an ``os.mkdir`` lock for a directory.
  When writers race for one path, exactly one wins.
- :func:`publish_directory` with ``overwrite`` swaps the new directory with the old one in one
  step (``RENAME_EXCHANGE``); where that is not available, the old directory is moved aside to
  ``.NAME.old-HOST-PID-RANDOM`` and put back if the final rename fails.
- :func:`sweep_stale` removes the siblings of writers that were killed (same host, pid gone),
  and puts back a moved-aside directory whose replacement never arrived.

This module imports only the errors, checks and paths modules.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import logging
import os
import platform
import re
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import OutputExistsError
from .paths import flag_for, refuse_existing

logger = logging.getLogger(__name__)

__all__ = ["sibling_name", "new_sibling", "remove", "sweep_stale", "renameat2_available", "rename_noreplace",
           "publish_directory", "appeared"]

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
# renameat2 syscall numbers, for a glibc older than 2.28 that has no wrapper.
_SYS_RENAMEAT2 = {"x86_64": 316, "amd64": 316, "aarch64": 276, "arm64": 276}
# The portable fallback's lock is held for one rename; one this old was left by a dead writer.
_LOCK_STALE_S = 60.0
_LOCK_WAIT_S = 30.0

_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


# ---------------------------------------------------------------------------- temporary siblings
def _prefix(name: str) -> str:
    # Sibling names stay under NAME_MAX (255 bytes) whatever the length of `name`.
    if len(os.fsencode(name)) <= 180:
        return "." + name
    return ".~" + hashlib.sha1(os.fsencode(name)).hexdigest()[:16]


def sibling_name(name: str, role: str, pid: int | None = None) -> str:
    """Name of a temporary sibling of ``name``: ``.NAME.ROLE-HOST-PID-RANDOM`` (``role`` is "tmp" or "old").

    The host and pid let :func:`sweep_stale` tell a dead writer's leftovers from a live one's.

    >>> sibling_name("out", "tmp").startswith(".out.tmp-")
    True
    """
    return f"{_prefix(name)}.{role}-{_HOST}-{os.getpid() if pid is None else pid}-{secrets.token_hex(4)}"


def _sibling_pattern(name: str) -> re.Pattern:
    return re.compile(re.escape(_prefix(name)) + r"\.(tmp|old)-([0-9a-f]{8})-([0-9]+)-[0-9a-f]{8}\Z")


def new_sibling(target: Path, role: str, *, directory: bool) -> Path:
    """Create an empty temporary sibling of ``target`` (a directory or a file), with the umask's permissions."""
    while True:
        tmp = target.parent / sibling_name(target.name, role)
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


def remove(path: Path) -> None:
    """Remove a file or a directory tree; a path already gone is fine."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def sweep_stale(target: Path) -> None:
    """Remove the temporary siblings of ``target`` left by writers that are gone (kill -9).

    A moved-aside previous output (``old``) whose replacement never arrived is put back instead.
    """
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
                rename_noreplace(path, target)
            except OSError:
                pass
            else:
                logger.warning("put back %s, which process %s had moved aside to %s before it died",
                               target, m.group(3), path)
                continue
        logger.info("removing %s, left behind by process %s, which is gone", path, m.group(3))
        remove(path)


# ---------------------------------------------------------------------------- renames
@functools.cache
def _renameat2_impl() -> Callable[[bytes, bytes, int], int] | None:
    """The renameat2 call of this system, resolved once, or None."""
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


def renameat2_available() -> bool:
    """Whether this system has renameat2 (a filesystem may still refuse a flag).

    Every rename asks here, so a test that replaces this function with ``lambda: False``
    exercises the portable fallback (hard link, ``os.mkdir`` lock, move aside) on Linux.
    """
    return _renameat2_impl() is not None


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``: True when done, False when not available here.

    Raises the OSError of a real failure (FileExistsError, FileNotFoundError, ...).
    """
    if not renameat2_available():
        return False
    if _renameat2_impl()(os.fsencode(src), os.fsencode(dst), flags) == 0:
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


def rename_noreplace(src: Path, dst: Path) -> None:
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


def appeared(target: Path, arg: str) -> OutputExistsError:
    """The error for an output that another writer created while this one was writing. Raise it."""
    return OutputExistsError(f"`{arg}` {str(target)!r} already exists (it was created while this write was in "
                             f"progress, and was left as it is); pass {flag_for(arg, 'overwrite')} to replace it")


def _replace_aside(tmp: Path, target: Path) -> None:
    """Replace the directory ``target`` by ``tmp``: move it aside, rename, put it back on failure."""
    old = target.parent / sibling_name(target.name, "old")
    rename_noreplace(target, old)
    try:
        rename_noreplace(tmp, target)
    except BaseException:
        try:
            rename_noreplace(old, target)
        except OSError:
            logger.error("could not put the previous %s back; it is at %s", target, old)
        raise
    remove(old)


def publish_directory(tmp: Path, target: Path, overwrite: bool, arg: str,
                      check_existing: Callable[[Path], None] | None) -> None:
    """Rename the finished directory ``tmp`` to ``target``, replacing an existing one only with ``overwrite``.

    After an exchange ``tmp`` holds the previous directory; the caller removes it.
    ``check_existing`` may refuse to replace a directory (it raises), as in
    :func:`~llmrank_graph.base.files.atomic_directory`.

    Raises
    ------
    OutputExistsError
        ``target`` appeared during the write and ``overwrite`` is False.
    """
    if not overwrite:
        try:
            rename_noreplace(tmp, target)
        except FileExistsError:
            raise appeared(target, arg) from None
        return
    while True:
        if not os.path.lexists(target):
            try:
                rename_noreplace(tmp, target)
                return
            except FileExistsError:
                continue  # created meanwhile: replace it below
        refuse_existing(target, "directory", True, arg)
        if check_existing is not None:
            check_existing(target)
        try:
            if _renameat2(tmp, target, _RENAME_EXCHANGE):
                return  # `tmp` now holds the previous directory; the caller removes it
        except FileNotFoundError:
            continue  # removed meanwhile
        _replace_aside(tmp, target)
        return
