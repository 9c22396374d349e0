"""Text sources: the embedded Wikipedia corpus, local files, directories of them and ``datasets`` datasets.

:func:`load_texts` reads a source (None is the embedded corpus of :mod:`.wikipedia`, re-exported
here); :func:`check_text_source` decides, without reading any text, whether a source can be
read, so that the command line refuses a bad one before it loads a model; :func:`token_blocks`
turns texts into fixed-size token blocks for calibration or perplexity.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Sequence

import torch

from ..base.checks import check_int, fail_type
from ..base.params import Check, OneOf, validated
from ..errors import FileFormatError, InvalidArgumentError, MissingDependencyError, MissingInputError
from .wikipedia import SPLITS, _articles, wikipedia_articles, wikipedia_dump_file

logger = logging.getLogger(__name__)

__all__ = ["wikipedia_articles", "load_texts", "check_text_source", "token_blocks", "source_blocks",
           "wikipedia_dump_file", "SPLITS", "TEXT_SUFFIXES"]

#: Local file formats :func:`load_texts` reads.
TEXT_SUFFIXES = (".txt", ".jsonl")
# What a text source given by name may be, and what `texts` of calibration and evaluation
# accepts, in messages; the parenthesis says why a str was taken as neither a path nor a name.
_SOURCE = "a path to a .txt/.jsonl file or to a directory of them, or a `datasets` dataset name"
_WHY = "a path must exist; a dataset name has no whitespace and at most 255 characters"
_SOURCE_WHAT = f"{_SOURCE} ({_WHY})"
_TEXTS_WHAT = f"None, a list of str, or {_SOURCE} ({_WHY}; one text goes in a list: [text])"

# Longest file name (one path component) that POSIX file systems store, in bytes; a longer
# "path" can only be a text given by mistake, and asking the OS about it raises ENAMETOOLONG.
_NAME_MAX = 255
# Most names listed in a refusal of a directory's entries.
_LISTED = 5


def check_text_source(source: str | os.PathLike | None, *, arg: str = "texts") -> str:
    """Check a text source of :func:`load_texts` without reading its texts, and say what it is.

    Everything that can be refused without reading is refused here, so that the command line,
    which calls this before it loads a model, fails in seconds; and nothing reaches a loader
    that could fail on it with an error of its own:

    - a ``.txt`` or ``.jsonl`` path must be an existing file;
    - an existing directory stands for its files, read in name order: each entry must be a
      ``.txt`` or ``.jsonl`` file. An empty directory, and one that holds anything else (a
      graph's Parquet files, a note, a subdirectory), is refused, naming the entries;
    - an existing file of another format is refused (it is never handed to ``datasets``,
      which would query the Hub with its name);
    - a name that can only be a local path (it starts with ``/``, ``.`` or ``~``) must exist;
    - anything else is a ``datasets`` dataset name, ``name`` or ``name:split``: it needs the
      ``datasets`` package, has no whitespace and at most 255 characters (a text given where
      a source was meant is refused, never asked about as a file name), and its ``name`` is
      not a local path.

    Parameters
    ----------
    source : str, path-like or None
        As in :func:`load_texts`.
    arg : str
        Name of the argument, for the messages (e.g. ``"--texts"``).

    Returns
    -------
    str
        ``"embedded"`` (None), ``"txt"``, ``"jsonl"``, ``"directory"`` or ``"dataset"``.

    Raises
    ------
    InvalidArgumentTypeError, InvalidArgumentError, MissingInputError, MissingDependencyError
        As :func:`load_texts`.

    Example
    -------
    >>> import tempfile
    >>> scratch = tempfile.TemporaryDirectory()
    >>> notes = Path(scratch.name) / "corpus.md"
    >>> _ = notes.write_text("# some notes")
    >>> check_text_source(notes.with_suffix(".txt"), arg="--texts")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.MissingInputError: `--texts` file '.../corpus.txt' does not exist
    >>> check_text_source(notes)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `texts` file '.../corpus.md' has an unsupported format (.md); ...
    >>> check_text_source(scratch.name, arg="--texts")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `--texts` directory '...' holds entries that are ...: corpus.md; ...
    >>> _ = Path(scratch.name, "corpus.txt").write_text("Some text.")
    >>> notes.unlink()
    >>> check_text_source(scratch.name)
    'directory'
    >>> scratch.cleanup()
    """
    return _check_source(source, arg, _SOURCE_WHAT)


def _check_source(source, arg: str, what: str) -> str:
    """:func:`check_text_source`, saying ``what`` the argument accepts when it is not a source at all."""
    if source is None:
        wikipedia_dump_file()
        return "embedded"
    if not isinstance(source, (str, os.PathLike)):
        raise fail_type(arg, "a str, a path or None", source)
    text = os.fspath(source)
    # os.path's tests answer False, never an error, for a name the OS cannot hold (Path's raise).
    expanded = os.path.expanduser(text)
    exists = os.path.exists(expanded)
    if not exists and not _could_be_path(text):
        raise fail_type(arg, what, source)
    path = Path(expanded)
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        if not os.path.isfile(expanded):
            raise MissingInputError(f"`{arg}` file {str(path)!r} {'is not a file' if exists else 'does not exist'}")
        return suffix[1:]
    if os.path.isdir(expanded):
        _text_files(path, arg)
        return "directory"
    if os.path.isfile(expanded):
        # Never hand a local file to `datasets`: it would query the Hub with the file's name.
        raise InvalidArgumentError(f"`{arg}` file {str(path)!r} has an unsupported format ({suffix or 'no suffix'}); "
                                   f"supported: {', '.join(TEXT_SUFFIXES)} (or a `datasets` dataset name)")
    if exists:
        raise InvalidArgumentError(f"`{arg}` {str(path)!r} is neither a regular file nor a directory; give a "
                                   ".txt/.jsonl file or a directory of them")
    if text.startswith(("/", ".", "~")):
        raise MissingInputError(f"`{arg}` {text!r} does not exist (a local path; dataset names do not start "
                                "with '/', '.' or '~')")
    _check_dataset_name(text, arg, what)
    return "dataset"


def _could_be_path(text: str) -> bool:
    """Whether ``text`` could name a file: not empty, no control character, no name over 255 bytes."""
    if not text or any(ord(c) < 32 or ord(c) == 127 for c in text):
        return False
    return all(len(part.encode("utf-8", "surrogateescape")) <= _NAME_MAX for part in re.split(r"[\\/]", text))


def _check_dataset_name(text: str, arg: str, what: str) -> None:
    """Refuse what ``datasets`` must not be asked about: a text, a local path with a split; or no ``datasets``."""
    if len(text) > _NAME_MAX or any(c.isspace() for c in text):
        raise fail_type(arg, what, text)
    name, _ = _dataset_split(text)
    if name != text and os.path.exists(os.path.expanduser(name)):
        raise InvalidArgumentError(f"`{arg}` {text!r} names the local path {name!r} with a split; local files and "
                                   f"directories are read without one: give {name!r}")
    if importlib.util.find_spec("datasets") is None:
        raise MissingDependencyError(
            f"`{arg}` {text!r} is neither the embedded corpus nor a .txt/.jsonl file, so it is read as a `datasets` "
            "dataset, which needs the `datasets` package; install it with `pip install llmrank-graph[data]`")


def _dataset_split(source: str) -> tuple[str, str]:
    """``(name, split)`` of ``"name:split"`` (default split ``"train"``), but not of a Windows drive (``C:\\``)."""
    if ":" in source and not re.match(r"^[A-Za-z]:[\\/]", source):
        name, split = source.rsplit(":", 1)
        return name, split
    return source, "train"


def _text_files(directory: Path, arg: str) -> list[Path]:
    """The files of a directory given as a text source, in name order; every entry must be a .txt/.jsonl file."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        raise InvalidArgumentError(f"`{arg}` directory {str(directory)!r} cannot be listed: {e.strerror}") from None
    if not names:
        raise InvalidArgumentError(f"`{arg}` directory {str(directory)!r} is empty; it must hold .txt or .jsonl "
                                   "files (read in name order)")
    files = [directory / n for n in names]
    others = [f"{f.name}/" if f.is_dir() else f.name for f in files
              if f.suffix.lower() not in TEXT_SUFFIXES or not f.is_file()]
    if others:
        listed = ", ".join(others[:_LISTED]) + (f" and {len(others) - _LISTED} more" if len(others) > _LISTED else "")
        raise InvalidArgumentError(f"`{arg}` directory {str(directory)!r} holds entries that are not .txt or .jsonl "
                                   f"files: {listed}; a directory of texts must hold only .txt/.jsonl files (read "
                                   "in name order), or give one file")
    return files


@validated({"split": OneOf(*SPLITS)})
def load_texts(source: str | os.PathLike | None = None, split: str = "calibration") -> list[str]:
    """Load documents from the embedded corpus, a local file, or a ``datasets`` dataset.

    Parameters
    ----------
    source : str, path-like or None
        ``None``: the embedded Wikipedia corpus (:func:`wikipedia_articles`).
        A ``.txt`` file: one document, or several separated by blank lines.
        A ``.jsonl`` file: one JSON object per line with a ``"text"`` field.
        A directory: the documents of every file in it, files in name order; each entry must
        be a ``.txt`` or ``.jsonl`` file (anything else is refused, naming it).
        Anything else: a ``datasets`` dataset name, optionally followed by ``":split"``
        (default split ``"train"``); its ``"text"`` column is used. This needs the optional
        ``datasets`` package and never downloads unless ``datasets`` itself is configured
        to. What is neither an existing path nor a dataset name (whitespace, more than 255
        characters: a text given by mistake) is refused. See :func:`check_text_source`.
    split : {"calibration", "evaluation", "all"}
        Split of the embedded corpus; only used when `source` is None.

    Returns
    -------
    list of str
        The non-empty documents.

    Raises
    ------
    InvalidArgumentTypeError
        If `source` is not a str, a path or None, or is a str that is neither an existing
        path nor a dataset name (a TypeError).
    InvalidArgumentError
        If `split` is invalid, `source` is an existing file that is neither ``.txt`` nor
        ``.jsonl``, a directory that is empty or holds anything but ``.txt``/``.jsonl``
        files, a dataset ``datasets`` cannot load, or the source holds no text (a ValueError).
    FileFormatError
        If a ``.jsonl`` line is not JSON or has no ``"text"`` string, or a file is not UTF-8
        (a ValueError naming the file, and the line or byte).
    MissingInputError
        If `source` names a ``.txt``/``.jsonl`` file or a local path that does not exist, or a
        dataset that ``datasets`` does not find (a FileNotFoundError).
    MissingDependencyError
        If a dataset is requested and ``datasets`` is not installed (an ImportError).

    Example
    -------
    >>> texts = load_texts(split="evaluation")
    >>> len(texts) > 0
    True

    A directory of files, read in name order:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as scratch:
    ...     _ = Path(scratch, "b.jsonl").write_text('{"text": "third"}\\n')
    ...     _ = Path(scratch, "a.txt").write_text("first\\n\\nsecond")
    ...     load_texts(scratch)
    ['first', 'second', 'third']
    """
    return _load_texts(source, split)


def _load_texts(source, split: str) -> list[str]:
    """:func:`load_texts` for a checked ``split``."""
    kind = check_text_source(source)
    if kind == "embedded":
        return _articles(split)
    if kind == "dataset":
        texts = _read_dataset(str(source))
    else:
        path = Path(source).expanduser()
        files = _text_files(path, "texts") if kind == "directory" else [path]
        texts = [t for f in files for t in (_read_jsonl(f) if f.suffix.lower() == ".jsonl" else _read_txt(f))]
    if not texts:
        raise InvalidArgumentError(f"`source` must contain some text; {str(source)!r} has none")
    logger.debug("Loaded %d texts from %s", len(texts), source)
    return texts


def _not_utf8(path: Path, e: UnicodeDecodeError) -> FileFormatError:
    return FileFormatError(f"`texts` file {str(path)!r} is not UTF-8 text (invalid byte at offset {e.start}); "
                           "convert it to UTF-8")


def _read_txt(path: Path) -> list[str]:
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e) from None
    # Documents are separated by one or more blank lines (a file without any is one document).
    parts = re.split(r"\n[ \t]*\n", content)
    return [p.strip() for p in parts if p.strip()]


def _read_jsonl(path: Path) -> list[str]:
    texts = []
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e) from None
    for lineno, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise FileFormatError(f"`texts` file {str(path)!r} line {lineno} is not valid JSON: {e}") from None
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise FileFormatError(
                f"`texts` file {str(path)!r} line {lineno} must be an object with a string "
                f"'text' field; got {line.strip()[:80]!r}"
            )
        if text.strip():
            texts.append(text)
    return texts


def _read_dataset(source: str) -> list[str]:
    try:
        import datasets
    except ImportError as e:
        raise MissingDependencyError(
            f"Loading the dataset {source!r} needs the `datasets` package; install it with "
            "`pip install llmrank-graph[data]`"
        ) from e
    name, ds_split = _dataset_split(source)
    try:
        ds = datasets.load_dataset(name, split=ds_split)
    except FileNotFoundError as e:  # datasets' DatasetNotFoundError among them
        raise MissingInputError(f"`texts` dataset {source!r} was not found: {e}") from None
    except OSError:
        raise  # the network or the disk, not the name: a failure of the work, as the OS says it
    except Exception as e:  # datasets' own errors (an unknown split, files it cannot build a dataset from)
        raise InvalidArgumentError(f"`texts` {source!r} could not be loaded as a `datasets` dataset: "
                                   f"{type(e).__name__}: {e}") from None
    if "text" not in ds.column_names:
        raise InvalidArgumentError(
            f"`source` dataset {source!r} must have a 'text' column; it has {ds.column_names}"
        )
    return [t for t in ds["text"] if isinstance(t, str) and t.strip()]


def _int_at_least_1(arg: str, value) -> int:
    return check_int(arg, value, minimum=1)


def _text_list(arg: str, texts) -> list[str]:
    """``texts`` as a non-empty list of str."""
    if isinstance(texts, str):
        raise fail_type(arg, "a sequence of str, not a single str (wrap it in a list)", texts)
    try:
        texts = list(texts)
    except TypeError:  # not iterable
        raise fail_type(arg, "a non-empty sequence of str", texts) from None
    if not all(isinstance(t, str) for t in texts):
        raise fail_type(arg, "a non-empty sequence of str", [type(t).__name__ for t in texts][:5])
    if not texts:
        raise InvalidArgumentError(f"`{arg}` must be a non-empty sequence of str; got 0 items")
    return texts


def _check_texts(arg: str, texts):
    """``texts`` of calibration or evaluation: None, a text source (:func:`check_text_source`) or a list of str."""
    if texts is None:
        return None  # the embedded corpus, checked when it is read: `input_ids` may make it unneeded
    if isinstance(texts, (str, os.PathLike)):
        _check_source(texts, arg, _TEXTS_WHAT)
        return texts
    if not isinstance(texts, Iterable) or isinstance(texts, (bytes, Mapping)):
        raise fail_type(arg, _TEXTS_WHAT, texts)
    return _text_list(arg, texts)


#: The constraint on the ``texts`` argument of calibration and evaluation: what it accepts is
#: decided here, before any model work (a str must be an existing path or a dataset name).
TEXTS = Check(_check_texts, _TEXTS_WHAT)


_TOKEN_BLOCKS_PARAMS = {
    "texts": Check(_text_list, "a non-empty sequence of str"),
    "n_samples": Check(_int_at_least_1, "an int >= 1"),
    "seq_len": Check(_int_at_least_1, "an int >= 1"),
}


@validated(_TOKEN_BLOCKS_PARAMS)
def token_blocks(
    tokenizer: Any,
    texts: Sequence[str],
    n_samples: int,
    seq_len: int,
) -> torch.Tensor:
    """Cut texts into consecutive, non-overlapping blocks of token ids.

    The documents are joined with ``tokenizer.eos_token`` (``"\\n\\n"`` if it has none) into
    one token stream (each document is tokenised with the separator in front of it, and only
    as many documents as needed are tokenised), which is cut from the start into blocks of
    `seq_len`; the first `n_samples` blocks are returned. The result is deterministic.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
        Any tokenizer called as ``tokenizer(text, add_special_tokens=False)``.
    texts : sequence of str
        The documents, e.g. from :func:`load_texts`.
    n_samples : int
        Number of blocks, >= 1.
    seq_len : int
        Tokens per block, >= 1.

    Returns
    -------
    torch.LongTensor
        Shape (n_samples, seq_len).

    Raises
    ------
    InvalidArgumentTypeError
        If `n_samples` or `seq_len` is not an int, or `texts` is not a sequence of str (a
        TypeError).
    InvalidArgumentError
        If `n_samples` or `seq_len` is below 1, `texts` is empty, or the texts have fewer than
        ``n_samples * seq_len`` tokens (the message gives both counts) (a ValueError).

    Example
    -------
    A word-level tokenizer, built in memory (no download):

    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from transformers import PreTrainedTokenizerFast
    >>> words = Tokenizer(models.WordLevel({"[UNK]": 0, "the": 1, "cat": 2, "sat": 3, "</s>": 4}, unk_token="[UNK]"))
    >>> words.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, eos_token="</s>")
    >>> token_blocks(tokenizer, ["the cat sat", "the cat"], n_samples=2, seq_len=3)
    tensor([[1, 2, 3],
            [4, 1, 2]])
    """
    return _cut_blocks(tokenizer, texts, n_samples, seq_len)


def _cut_blocks(tokenizer: Any, texts: list[str], n_samples: int, seq_len: int) -> torch.Tensor:
    """:func:`token_blocks` for checked arguments."""
    sep = getattr(tokenizer, "eos_token", None) or "\n\n"
    needed = n_samples * seq_len
    ids: list[int] = []
    # Tokenise document by document and stop once there is enough: the whole corpus is
    # ~700k tokens, a calibration run usually needs a small fraction of it.
    for i, text in enumerate(texts):
        piece = text if i == 0 else sep + text
        ids.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
        if len(ids) >= needed:
            break
    if len(ids) < needed:
        raise InvalidArgumentError(
            f"`texts` must hold at least n_samples * seq_len = {n_samples} * {seq_len} = {needed} "
            f"tokens; got {len(ids)} tokens available. Use fewer or shorter samples, or more text."
        )
    return torch.tensor(ids[:needed], dtype=torch.long).view(n_samples, seq_len)


def source_blocks(tokenizer: Any, texts, n_samples: int, seq_len: int, *, split: str) -> torch.Tensor:
    """Token blocks of a text source, for callers that have checked ``n_samples``, ``seq_len`` and ``split``.

    What :func:`~llmrank_graph.data.calibration.calibrate` and
    :func:`~llmrank_graph.data.evaluation.perplexity` do with their ``texts``: None, a path or
    a dataset name is read with :func:`load_texts` (None gives the embedded articles of
    ``split``), a sequence of str is used as it is; then :func:`token_blocks` cuts it.
    ``texts`` is checked as :data:`TEXTS` says (cheap: no text is read), for callers that
    do not declare it.

    Raises
    ------
    InvalidArgumentError
        ``tokenizer`` is None, or as :func:`load_texts` and :func:`token_blocks`.
    InvalidArgumentTypeError
        ``texts`` is none of what :data:`TEXTS` accepts: e.g. one long str, which is neither an
        existing path nor a dataset name (a TypeError).
    """
    if tokenizer is None:
        raise InvalidArgumentError("`tokenizer` is required unless `input_ids` is given")
    texts = _check_texts("texts", texts)
    if texts is None or isinstance(texts, (str, os.PathLike)):
        texts = _load_texts(texts, split)
    return _cut_blocks(tokenizer, texts, n_samples, seq_len)
