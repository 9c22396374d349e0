"""Output paths checked before any work: a mistake costs a second, not minutes of loading and calibration.

:func:`check_output_path` is the public check; the writers of :mod:`llmrank_graph.base.files`
run it themselves, and run :func:`refuse_existing` again just before they replace anything.
This module imports only the errors and checks modules.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import OutputExistsError
from .checks import check_bool, check_choice, fail, fail_type

__all__ = ["OUTPUT_KINDS", "check_output_path", "refuse_existing", "flag_for"]

#: What an output path may be: values of ``kind`` in :func:`check_output_path`.
OUTPUT_KINDS: tuple[str, ...] = ("file", "directory")


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


def flag_for(arg: str, name: str) -> str:
    """How the caller named ``arg`` asks for ``name``: ``--name`` on the command line, else ``name=True``.

    >>> flag_for("--out", "overwrite"), flag_for("directory", "overwrite")
    ('--overwrite', 'overwrite=True')
    """
    return f"--{name}" if arg.startswith("--") else f"{name}=True"


def refuse_existing(target: Path, kind: str, overwrite: bool, arg: str) -> None:
    """Refuse to write a ``kind`` at ``target`` where something already is, unless ``overwrite`` allows it.

    A file is never replaced by a directory, nor a directory by a file, whatever ``overwrite``
    says. The writers call it once before the work and again just before the final rename.

    Raises
    ------
    OutputExistsError
        Naming ``arg``, the path, and the flag that would allow the replacement.
    """
    if not os.path.lexists(target):
        return
    is_dir = target.is_dir()
    if kind == "directory" and not is_dir:
        raise OutputExistsError(f"`{arg}` {str(target)!r} exists and is not a directory; "
                                f"it is never replaced by one, even with {flag_for(arg, 'overwrite')}")
    if kind == "file" and is_dir:
        raise OutputExistsError(f"`{arg}` {str(target)!r} exists and is a directory; "
                                f"it is never replaced by a file, even with {flag_for(arg, 'overwrite')}")
    if not overwrite:
        raise OutputExistsError(f"`{arg}` {str(target)!r} already exists; pass {flag_for(arg, 'overwrite')} "
                                "to replace it")


def check_output_path(path: str | os.PathLike, *, kind: str = "file", overwrite: bool = False,
                      arg: str = "path") -> Path:
    """Check that ``path`` can be written as a ``kind``, before any work starts.

    Nothing is created. :func:`~llmrank_graph.base.files.atomic_file` and
    :func:`~llmrank_graph.base.files.atomic_directory` run the same checks themselves; call
    this first when the work before the write is long.

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
    >>> import tempfile
    >>> scratch = tempfile.TemporaryDirectory()
    >>> out = Path(scratch.name) / "pruned-model"
    >>> check_output_path(out, kind="directory") == out
    True
    >>> out.mkdir()
    >>> check_output_path(out, kind="directory", arg="--out")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.OutputExistsError: `--out` '.../pruned-model' already exists; pass --overwrite to replace it
    >>> scratch.cleanup()
    """
    check_choice("kind", kind, OUTPUT_KINDS)
    check_bool("overwrite", overwrite)
    target = _as_output_path(path, arg)
    _check_parent(target, arg)
    refuse_existing(target, kind, overwrite, arg)
    return target
