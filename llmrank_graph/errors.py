"""Every error llmrank_graph raises on purpose derives from :class:`LLMRankGraphError`.

Each class also derives from the built-in exception a Python user expects (ValueError for a
bad value, TypeError for a wrong type, ...), so ``except ValueError`` keeps working, while
``except LLMRankGraphError`` catches everything the library raises deliberately. The CLI
relies on that: it prints ``error: ...`` for these and a traceback only for bugs.

This module imports nothing from the package: every stage may use it.
"""

from __future__ import annotations

__all__ = ["LLMRankGraphError", "InvalidArgumentError", "InvalidArgumentTypeError", "FileFormatError",
           "OutputExistsError", "MissingInputError", "MissingDependencyError"]


class LLMRankGraphError(Exception):
    """Base class of the errors llmrank_graph raises on purpose."""


class InvalidArgumentError(LLMRankGraphError, ValueError):
    """An argument has the right type but a value that is not allowed."""


class InvalidArgumentTypeError(LLMRankGraphError, TypeError):
    """An argument has the wrong type."""


class FileFormatError(LLMRankGraphError, ValueError):
    """A file or directory is damaged, partial, or not in the expected format."""


class OutputExistsError(LLMRankGraphError, FileExistsError):
    """An output path exists and was not to be replaced."""


class MissingInputError(LLMRankGraphError, FileNotFoundError):
    """An input file or directory named by an argument does not exist."""


class MissingDependencyError(LLMRankGraphError, ImportError):
    """An optional package needed for what was asked is not installed; the message names the extra."""
