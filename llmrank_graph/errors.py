"""Every error llmrank_graph raises on purpose derives from :class:`LLMRankGraphError`.

Each class also derives from the built-in exception a Python user expects (ValueError for a
bad value, TypeError for a wrong type, ...), so ``except ValueError`` keeps working, while
``except LLMRankGraphError`` catches everything the library raises deliberately. The CLI
relies on that: it prints ``error: ...`` for these and a traceback only for bugs.

Each class says how the CLI exits when it is raised, in its ``exit_status``:

- 2 (the default): the request or an input is wrong (a bad argument, a damaged or missing
  file, an output that exists, a missing optional package). Fix the command and run again.
- 1: :class:`WorkFailedError` and its subclasses: everything that was asked for was accepted,
  but the work itself failed (a power iteration that did not converge, a GPU out of memory).

This module imports nothing from the package: every stage may use it.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["LLMRankGraphError", "InvalidArgumentError", "InvalidArgumentTypeError", "FileFormatError",
           "GraphFormatError", "OutputExistsError", "MissingInputError", "MissingDependencyError", "WorkFailedError",
           "WriteFailedError", "USAGE_EXIT_STATUS", "FAILURE_EXIT_STATUS"]

#: Exit status of the CLI for a usage or input error (as argparse uses for its own).
USAGE_EXIT_STATUS = 2
#: Exit status of the CLI for a failure during the work.
FAILURE_EXIT_STATUS = 1


class LLMRankGraphError(Exception):
    """Base class of the errors llmrank_graph raises on purpose.

    Attributes
    ----------
    exit_status : int
        How ``llmrank-graph`` exits on this error: :data:`USAGE_EXIT_STATUS` (2) unless a
        subclass says otherwise.
    """

    exit_status: ClassVar[int] = USAGE_EXIT_STATUS


class InvalidArgumentError(LLMRankGraphError, ValueError):
    """An argument has the right type but a value that is not allowed."""


class InvalidArgumentTypeError(LLMRankGraphError, TypeError):
    """An argument has the wrong type."""


class FileFormatError(LLMRankGraphError, ValueError):
    """A file or directory is damaged, partial, or not in the expected format."""


class GraphFormatError(FileFormatError):
    """A graph directory is damaged, partial, or not an llmrank_graph graph.

    Raised by :mod:`llmrank_graph.graph.storage` when reading; also importable as
    ``llmrank_graph.GraphFormatError`` and ``llmrank_graph.graph.mlpgraph.GraphFormatError``.
    """


class OutputExistsError(LLMRankGraphError, FileExistsError):
    """An output path exists and was not to be replaced."""


class MissingInputError(LLMRankGraphError, FileNotFoundError):
    """An input file or directory named by an argument does not exist."""


class MissingDependencyError(LLMRankGraphError, ImportError):
    """An optional package needed for what was asked is not installed; the message names the extra."""


class WorkFailedError(LLMRankGraphError):
    """The request was valid but the work failed (no convergence, out of GPU memory): CLI exit status 1."""

    exit_status: ClassVar[int] = FAILURE_EXIT_STATUS


class WriteFailedError(WorkFailedError, OSError):
    """The system refused to write an output (disk full, file too large, read-only): CLI exit status 1.

    Raised by the atomic writers of :mod:`llmrank_graph.base.files` for every OSError during a
    write, once the temporary and the parent directories they created are removed. The message is
    ``could not write PATH: REASON``, where ``PATH`` is the output as the caller named it (a
    directory, not the file inside it that failed).

    Attributes
    ----------
    path : str
        The output that could not be written.
    reason : str
        What the system said (``No space left on device``).
    errno : int or None
        The system's error number (``errno.ENOSPC``), where there is one. As for any OSError,
        ``filename`` is ``path`` and ``strerror`` is ``reason``.
    """

    def __init__(self, path: str, reason: str, errno: int | None = None):
        super().__init__(f"could not write {path}: {reason}")
        # Built from parts, which stay the arguments: the message names a path, not a parameter,
        # so whoever rewords the library's messages leaves it alone.
        self.args = (path, reason, errno)
        self.path, self.reason, self.errno = path, reason, errno
        self.filename, self.strerror = path, reason  # as any OSError says them

    def __str__(self) -> str:
        return f"could not write {self.path}: {self.reason}"

    def __reduce__(self):
        return type(self), self.args
