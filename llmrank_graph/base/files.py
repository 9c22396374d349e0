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
- Permissions follow the umask (0o666 for a file, 0o777 for a directory, masked), not the
  0o600/0o700 of ``mkstemp``/``mkdtemp`` nor the 0o600 that the safetensors library gives its
  files: every file and directory of the output is set so just before the rename. Files are
  flushed to disk (fsync) before the rename.

When the system refuses
-----------------------
Disk full, a file-size limit (``ulimit -f``), a read-only target: every OSError raised while
writing (the caller's own writes into the temporary included, and the I/O errors that the
safetensors and tokenizers libraries report as plain exceptions) becomes one
:class:`~llmrank_graph.errors.WriteFailedError`, ``could not write PATH: REASON``, where PATH
is the output the caller named. By then the temporary is removed, the previous output is as it
was, and the parent directories this write created are removed again. A writer nested in
another's temporary (a mask saved inside a model directory) is reported under the outer output.

>>> import errno, tempfile
>>> scratch = tempfile.TemporaryDirectory()
>>> with atomic_directory(Path(scratch.name) / "new" / "graph") as tmp:  # doctest: +ELLIPSIS
...     _ = (tmp / "meta.json").write_text("{}")
...     raise OSError(errno.ENOSPC, "No space left on device")  # as a full disk would
Traceback (most recent call last):
...
llmrank_graph.errors.WriteFailedError: could not write .../new/graph: No space left on device
>>> list(Path(scratch.name).iterdir())  # no temporary, no new parent
[]
>>> scratch.cleanup()

This module sits below every stage: it imports only the errors, checks, paths and renames modules.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import signal
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from ..errors import LLMRankGraphError, WriteFailedError
from .checks import fail_type
from .paths import OUTPUT_KINDS, check_output_path, refuse_existing
from .renames import appeared, new_sibling, publish_directory, remove, rename_noreplace, sweep_stale

logger = logging.getLogger(__name__)

__all__ = ["OUTPUT_KINDS", "check_output_path", "atomic_file", "atomic_directory", "write_bytes_atomic",
           "write_text_atomic", "write_json_atomic", "save_safetensors_atomic", "write_failures_named"]

#: Exit status after a SIGTERM during a write: 128 + 15, as a shell reports a SIGTERM death.
SIGTERM_EXIT_STATUS = 128 + 15


# ---------------------------------------------------------------------------- permissions
def _read_umask() -> int | None:
    """The process's umask from ``/proc/self/status`` (Linux >= 4.7), or None where it is not there."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_by_setting() -> int:
    # os.umask can only be read by setting it; done once, at import, so that no file another
    # thread creates later gets the transient value.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: The umask at import, for systems without ``/proc/self/status``.
_UMASK_AT_IMPORT = _read_umask()
if _UMASK_AT_IMPORT is None:
    _UMASK_AT_IMPORT = _umask_by_setting()


def _umask() -> int:
    """The umask now (``/proc`` follows a later ``os.umask``), else the one at import."""
    mask = _read_umask()
    return _UMASK_AT_IMPORT if mask is None else mask


def _follow_umask(root: Path) -> None:
    """Give ``root`` (a file, or a directory and all it holds) the umask's permissions.

    Files written by other libraries into the temporary may be 0o600 (safetensors creates its
    files so); what the user gets is 0o666 or 0o777 masked, as for any file they create.
    Symbolic links are left alone; a filesystem without permissions (vfat) is left as it is.
    """
    mask = _umask()
    file_mode, dir_mode = 0o666 & ~mask, 0o777 & ~mask

    def settle(path: str) -> None:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return
        mode = dir_mode if stat.S_ISDIR(st.st_mode) else file_mode
        if stat.S_IMODE(st.st_mode) == mode:
            return
        try:
            os.chmod(path, mode)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            logger.debug("could not set the permissions of %s (%s); left as they are", path, e)

    settle(os.fspath(root))
    if root.is_dir() and not root.is_symlink():
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                settle(os.path.join(dirpath, name))


# ---------------------------------------------------------------------------- failures
# The Rust libraries we write through (safetensors, tokenizers) report an I/O error as a plain
# exception whose text ends with Rust's "(os error N)"; it is the only place they give the errno.
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _system_refusal(e: BaseException) -> tuple[str, int | None] | None:
    """(reason, errno) when ``e`` is the system refusing a write, else None (the error stays as it is)."""
    if isinstance(e, WriteFailedError):  # a nested writer's: named again under the outer output
        return e.reason, e.errno
    if isinstance(e, LLMRankGraphError):  # the library's own (an output that appeared, ...)
        return None
    if isinstance(e, OSError):
        if e.errno:
            return os.strerror(e.errno), e.errno
        return str(e) or type(e).__name__, None
    if type(e) is Exception or isinstance(e, SafetensorError):
        m = _RUST_OS_ERROR.search(str(e))
        if m is not None:
            code = int(m.group(1))
            return os.strerror(code), code
    return None


def _make_parents(directory: Path, created: list[Path]) -> None:
    """``mkdir -p directory``, appending each directory it creates to ``created`` (outermost first)."""
    missing = []
    while not os.path.lexists(directory) and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # made meanwhile by another writer: theirs, not ours to remove
        created.append(d)


@contextlib.contextmanager
def write_failures_named(path: str | os.PathLike) -> Iterator[None]:
    """Raise the system's refusal of a write in the block as :class:`~llmrank_graph.errors.WriteFailedError`.

    The atomic writers use it; so may a writer that cannot be one (an ``O_EXCL`` claim file, a
    lock), so that its failures read as theirs: ``could not write PATH: REASON``. Nothing is
    undone here; every other exception passes unchanged.

    >>> import errno
    >>> with write_failures_named("results/runs/a.claim"):
    ...     raise OSError(errno.EDQUOT, "Disk quota exceeded")
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.WriteFailedError: could not write results/runs/a.claim: Disk quota exceeded
    """
    try:
        yield
    except Exception as e:
        refusal = _system_refusal(e)
        if refusal is None:
            raise
        raise WriteFailedError(os.fspath(path), *refusal) from e


@contextlib.contextmanager
def _undone_on_failure(target: Path) -> Iterator[list[Path]]:
    """On any exception, remove the parent directories listed (this write created them); a
    refusal of the system is raised as :class:`~llmrank_graph.errors.WriteFailedError` naming ``target``."""
    created: list[Path] = []
    with write_failures_named(target):
        try:
            yield created
        except BaseException:
            for d in reversed(created):
                try:
                    os.rmdir(d)
                except OSError:
                    break  # not empty: another writer's output is there now
            raise


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
    write it by name. On success it gets the umask's permissions, is flushed to disk and
    renamed to ``path``; on any exception (KeyboardInterrupt and, in the main thread, SIGTERM
    included) it is removed, ``path`` is left as it was, and the parent directories that this
    call created are removed again.

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
    WriteFailedError
        The system refused the write (disk full, file too large, read-only): ``could not write
        PATH: REASON``, raised for any OSError in the block or in the rename.

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
    with _undone_on_failure(target) as created:
        _make_parents(target.parent, created)
        sweep_stale(target)
        tmp = None
        with _sigterm_raises():
            try:
                tmp = new_sibling(target, "tmp", directory=False)
                yield tmp
                _follow_umask(tmp)
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

    On success everything in it gets the umask's permissions, is flushed to disk, and the
    directory is renamed to ``path``. On any exception (KeyboardInterrupt and, in the main
    thread, SIGTERM included) it is removed, ``path`` is left as it was, and the parent
    directories that this call created are removed again. Temporaries left by writers that were
    killed are swept first (see the module docstring).

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
    WriteFailedError
        The system refused the write: ``could not write PATH: REASON``, naming ``path`` even
        when a file inside the directory failed.

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
    with _undone_on_failure(target) as created:
        _make_parents(target.parent, created)
        sweep_stale(target)
        refuse_existing(target, "directory", overwrite, arg)  # a swept writer's output may be back
        tmp = None
        with _sigterm_raises():
            try:
                tmp = new_sibling(target, "tmp", directory=True)
                yield tmp
                _follow_umask(tmp)
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

    target = Path(path).expanduser()
    with atomic_file(path, overwrite=overwrite, arg=arg) as tmp:
        # safetensors writes its own temporary (.tmpXXXXXX) beside the file it is given and
        # renames it; in a scratch directory of ours, that one is swept like ours after a kill.
        scratch = new_sibling(target, "tmp", directory=True)
        try:
            save_file(dict(tensors), str(scratch / target.name), metadata=metadata)
            os.replace(scratch / target.name, tmp)
        finally:
            remove(scratch)
    return target
