"""The embedded default corpus: a shortened English Wikipedia dump, split for calibration and evaluation.

The dump ships in the gensim wheel (``gensim/test/test_data/enwiki-latest-pages-articles1.xml-
p000000010p000030302-shortened.bz2``): 106 articles, about 690k words, licensed CC BY-SA 3.0
by the Wikipedia contributors. It needs no download. :func:`wikipedia_articles` splits it into
calibration and evaluation articles that never overlap. :mod:`.texts` reads it as the text
source None and re-exports what is public here.
"""

from __future__ import annotations

import bz2
import functools
import importlib.util
import logging
import re
from pathlib import Path

from ..base.params import OneOf, validated
from ..errors import MissingDependencyError, MissingInputError

logger = logging.getLogger(__name__)

__all__ = ["wikipedia_articles", "wikipedia_dump_file", "SPLITS"]

#: Allowed values of ``split`` in :func:`wikipedia_articles` and :func:`~.texts.load_texts`.
SPLITS = ("calibration", "evaluation", "all")

_DUMP_NAME = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
# Every EVAL_EVERY-th article (index i with i % EVAL_EVERY == EVAL_EVERY - 1) is evaluation.
_EVAL_EVERY = 4
# Articles shorter than this many whitespace-separated words after cleaning are skipped.
_MIN_WORDS = 50
# Trailing sections that are lists of links and citations rather than prose.
_TAIL_SECTIONS = ("see also", "references", "notes", "external links", "further reading",
                  "bibliography", "sources", "footnotes", "citations")
_TAIL_RE = re.compile(
    r"^==\s*(?:" + "|".join(re.escape(s) for s in _TAIL_SECTIONS) + r")\s*==\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_HEADING_RE = re.compile(r"^(={2,6})\s*(.*?)\s*\1\s*$", re.MULTILINE)
_EMPTY_BULLET_RE = re.compile(r"^[*#:;]+\s*$", re.MULTILINE)
_BLANK_RUN_RE = re.compile(r"\n[ \t]*(?:\n[ \t]*){2,}")


def wikipedia_dump_file() -> Path:
    """Path of the Wikipedia dump shipped in the gensim wheel.

    Found from gensim's module spec, without importing gensim.

    Raises
    ------
    MissingDependencyError
        If gensim is not installed (an ImportError).
    MissingInputError
        If this gensim build does not ship its test data (a FileNotFoundError).
    """
    spec = importlib.util.find_spec("gensim")
    if spec is None or spec.origin is None:
        raise MissingDependencyError("The embedded Wikipedia corpus ships with gensim; install it with "
                                     "`pip install gensim`")
    path = Path(spec.origin).parent / "test" / "test_data" / _DUMP_NAME
    if not path.is_file():
        raise MissingInputError(f"gensim is installed but its test data {path} is missing; reinstall gensim")
    return path


def _clean(wikitext: str) -> str:
    """Readable text from raw wikitext: markup removed, case and punctuation kept."""
    from gensim.corpora.wikicorpus import filter_wiki

    text = filter_wiki(wikitext)
    tail = _TAIL_RE.search(text)
    if tail is not None:
        text = text[: tail.start()]
    text = text.replace("'''", "").replace("''", "")
    text = _HEADING_RE.sub(lambda m: m.group(2), text)
    text = _EMPTY_BULLET_RE.sub("", text)
    text = "\n".join(line.rstrip() for line in text.splitlines())
    text = _BLANK_RUN_RE.sub("\n\n", text)
    return text.strip()


@functools.lru_cache(maxsize=1)
def _all_articles() -> tuple[tuple[str, str], ...]:
    """(title, text) of every usable article, in dump order. Memoised in-process."""
    from gensim.corpora.wikicorpus import extract_pages

    out = []
    skipped = 0
    with bz2.open(wikipedia_dump_file(), "rb") as f:
        # Namespace 0 holds the articles (no talk, user or template pages).
        for title, raw, _pageid in extract_pages(f, filter_namespaces=("0",)):
            if raw.lstrip()[:9].lower() == "#redirect":
                skipped += 1
                continue
            text = _clean(raw)
            if len(text.split()) < _MIN_WORDS:
                skipped += 1
                continue
            out.append((title, text))
    logger.debug("Extracted %d Wikipedia articles (%d redirects or short pages skipped)", len(out), skipped)
    return tuple(out)


@validated({"split": OneOf(*SPLITS)})
def wikipedia_articles(split: str = "calibration") -> list[str]:
    """Articles of the embedded Wikipedia corpus, split into calibration and evaluation.

    Redirect pages and articles of fewer than 50 words are skipped; the others are kept in
    dump order (by page id) with wiki markup removed but case and punctuation kept, and
    their trailing "See also"/"References"/"External links"... sections cut off.

    The split rule: numbering the kept articles ``i = 0, 1, 2, ...`` in dump order, article
    ``i`` goes to ``"evaluation"`` when ``i % 4 == 3`` and to ``"calibration"`` otherwise.
    The two sets never overlap and the rule is deterministic. With the shipped dump that is
    about 3/4 of the articles for calibration and 1/4 (well over 16 x 512 tokens) for
    evaluation.

    Parameters
    ----------
    split : {"calibration", "evaluation", "all"}
        Which articles to return; ``"all"`` returns every article in dump order.

    Returns
    -------
    list of str
        One string per article. A new list each call (the extraction itself is memoised).

    Raises
    ------
    ValueError
        If `split` is not one of the allowed values.

    Example
    -------
    >>> calib = wikipedia_articles("calibration")
    >>> evaluation = wikipedia_articles("evaluation")
    >>> set(calib).isdisjoint(evaluation)
    True
    """
    return _articles(split)


def _articles(split: str) -> list[str]:
    """:func:`wikipedia_articles` for a checked ``split``."""
    articles = _all_articles()
    if split == "all":
        return [text for _, text in articles]
    want_eval = split == "evaluation"
    return [
        text
        for i, (_, text) in enumerate(articles)
        if (i % _EVAL_EVERY == _EVAL_EVERY - 1) == want_eval
    ]
