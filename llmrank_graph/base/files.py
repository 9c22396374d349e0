"""Atomic writes: an output is either complete or absent, and is never replaced unless asked.

Every module that writes goes through here:

- :func:`atomic_file` writes one file; :func:`write_bytes_atomic`, :func:`write_text_atomic`,
  :func:`write_json_atomic` and :func:`save_safetensors_atomic` are built on it;
- :func:`atomic_directory` writes a directory;
- :func:`check_output_path` (from :mod:`llmrank_graph.base.paths`) checks an output path
  before any work starts, so that a mistake costs a second, not minutes of loading and
  calibration.

How
---
The data go to a temporary sibling (same directory, hence same filesystem) named
``.NAME.tmp-HOST-PID-RANDOM``, renamed to ``NAME`` once complete (the renames and the sweep
of stale siblings live in :mod:`llmrank_graph.base.renames`).

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

This module sits below every stage: it imports only the errors, checks, paths and renames modules.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .checks import fail_type
from .paths import OUTPUT_KINDS, check_output_path, refuse_existing
from .renames import appeared, new_sibling, publish_directory, remove, rename_noreplace, sweep_stale

logger = logging.getLogger(__name__)

__all__ = ["OUTPUT_KINDS", "check_output_path", "atomic_file", "atomic_directory", "write_bytes_atomic",
           "write_text_atomic", "write_json_atomic", "save_safetensors_atomic"]

#: Exit status after a SIGTERM during a write: 128 + 15, as a shell reports a SIGTERM death.
SIGTERM_EXIT_STATUS = 128 + 15


# ---------------------------------------------------------------------------- signals
def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _on_sigterm(signum, _frame) -> None:
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

    def hold(signum, _frame):
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
    >>> import tempfile
    >>> scratch = tempfile.TemporaryDirectory()
    >>> path = Path(scratch.name) / "scores.txt"
    >>> with atomic_file(path) as tmp:
    ...     _ = tmp.write_text("0.5")
    >>> path.read_text()
    '0.5'
    >>> with atomic_file(path) as tmp:  # doctest: +ELLIPSIS
    ...     _ = tmp.write_text("0.7")
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.OutputExistsError: `path` '...scores.txt' already exists; pass overwrite=True to replace it
    >>> scratch.cleanup()
    """
    target = check_output_path(path, kind="file", overwrite=overwrite, arg=arg)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)
    tmp = None
    with _sigterm_raises():
        try:
            tmp = new_sibling(target, "tmp", directory=False)
            yield tmp
            _fsync(tmp)
            with _signals_held():
                if overwrite:
                    refuse_existing(target, "file", True, arg)
                    os.replace(tmp, target)
                else:
                    try:
                        rename_noreplace(tmp, target)
                    except FileExistsError:
                        raise appeared(target, arg) from None
            _fsync(target.parent, directory=True)
        finally:
            if tmp is not None and os.path.lexists(tmp):
                remove(tmp)


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
    >>> import tempfile
    >>> scratch = tempfile.TemporaryDirectory()
    >>> out = Path(scratch.name) / "pruned-model"
    >>> with atomic_directory(out) as tmp:
    ...     _ = (tmp / "config.json").write_text("{}")
    ...     out.exists()   # nothing at the final path until the block ends
    False
    >>> sorted(p.name for p in out.iterdir())
    ['config.json']
    >>> scratch.cleanup()
    """
    target = check_output_path(path, kind="directory", overwrite=overwrite, arg=arg)
    if check_existing is not None and target.is_dir():
        check_existing(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)
    refuse_existing(target, "directory", overwrite, arg)  # a swept writer's output may be back
    tmp = None
    with _sigterm_raises():
        try:
            tmp = new_sibling(target, "tmp", directory=True)
            yield tmp
            _fsync_tree(tmp)
            with _signals_held():
                publish_directory(tmp, target, overwrite, arg, check_existing)
            _fsync(target.parent, directory=True)
        finally:
            # After an exchange `tmp` holds the previous directory; otherwise the unfinished one.
            with _signals_held():
                if tmp is not None and os.path.lexists(tmp):
                    remove(tmp)


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
