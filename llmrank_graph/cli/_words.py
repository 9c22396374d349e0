"""The user's words: the library's messages, reworded with the command-line options.

The library names its parameters (`` `amount` ``, ``overwrite=True``); the command line names
its options (``--amount``, ``--overwrite``). Each rule stays in the library, stated once; a
command runs it through :func:`_relabel`, which rewords the refusal with the options the user
typed (:func:`in_options`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType

from ..errors import LLMRankGraphError


def _relabel(options: Mapping[str, str | None], check: Callable, *args, **kwargs):
    """Run the library's ``check(*args, **kwargs)``; its messages name the command-line options instead.

    ``options`` maps parameter names to options (``{"amount": "--amount"}``), or to None for a
    parameter this command has no option for (``min_keep``). The rule stays in one place, the
    library; the user reads the option they typed (:func:`in_options` says how a message is
    reworded). Every error the library raises on purpose is reworded, whatever the class.
    """
    try:
        return check(*args, **kwargs)
    except LLMRankGraphError as e:
        text = str(e)
        if e.args != (text,):  # an error built from parts (a failed write): its message names a path
            raise
        raise type(e)(in_options(text, options)) from None


#: A name as it appears in code: snake_case with at least one underscore (``max_iter``), so that a
#: bare mention is unambiguous. Shorter names (``amount``) are recognised in backticks or as ``name=``.
_CODE_NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+")


def in_options(text: str, options: Mapping[str, str | None]) -> str:
    """``text`` with the library's parameter names replaced by the command's options.

    For a name with an option: `` `name` `` and `` `name=True` `` become the option,
    ``name=value`` becomes ``option value`` (``--param name=value`` for a ``--param`` key), and a
    bare snake_case mention (``n_samples * seq_len``) becomes the option. For a name the command
    has no option for (None), an advice to change it (" or `min_keep`") is dropped, and the
    message says that the command keeps it at the library's default.

    >>> in_options("allocation='local' with amount=0.99 keeps 0; lower `amount` or `min_keep`",
    ...            {"amount": "--amount", "allocation": "--allocation", "min_keep": None})
    "--allocation local with --amount 0.99 keeps 0; lower `--amount` (`min_keep` is not an option of this \
command: it keeps the library's default)"
    >>> in_options("`path` exists; pass overwrite=True", OUTPUT_OPTIONS)
    '`--out` exists; pass --overwrite'
    >>> in_options("`max_iter` must be a positive int; got 0", {"max_iter": "--param max_iter"})
    '`--param max_iter` must be a positive int; got 0'
    """
    for name, option in options.items():
        if option is None:
            advice = re.compile(rf"\s+or\s+(?:raise\s+|lower\s+)?`{re.escape(name)}`")
            if advice.search(text):
                text = advice.sub("", text)
                text += f" (`{name}` is not an option of this command: it keeps the library's default)"
            continue
        # One pass per name, so that an option is never reworded again (`--param max_iter`).
        n = re.escape(name)
        forms = [rf"`{n}=True`", rf"`{n}`", rf"(?<![\w.`-]){n}=(?:'(?P<quoted>[^'\s]*)'|(?P<value>[^\s,;:)]+))"]
        if _CODE_NAME.fullmatch(name):
            forms.append(rf"(?<![\w.`'\"-]){n}(?![\w`'\"=])")
        text = re.compile("|".join(forms)).sub(functools.partial(_as_option, name=name, option=option), text)
        text = text.replace(f"{option} ({option})", option)  # "pass force=True (--force)"
    return text


def _as_option(match: re.Match, *, name: str, option: str) -> str:
    """One mention of parameter ``name`` (a match of :func:`in_options`' forms), as the command's ``option``."""
    param = option.startswith("--param ")
    found = match.group(0)
    if found == f"`{name}=True`":
        return f"`{option}=true`" if param else f"`{option}`"
    if found == f"`{name}`":
        return f"`{option}`"
    value = match.group("quoted") if match.group("quoted") is not None else match.group("value")
    if value is None:  # a bare mention
        return option
    if param:
        return f"{option}={value}"
    return option if value == "True" else f"{option} {value}"  # overwrite=True: the flag


#: Where a command's output is written: the writers' parameter names -> the options.
OUTPUT_OPTIONS: Mapping[str, str] = MappingProxyType(
    {"path": "--out", "directory": "--out", "out_dir": "--out", "overwrite": "--overwrite", "force": "--force"})
