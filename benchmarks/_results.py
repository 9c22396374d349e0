"""The resumable result files of the benchmarks: one CSV row per measurement, appended as it is made.

A benchmark reads the rows it has (:func:`read_rows`), skips what they hold, and appends each new
measurement at once (:func:`append_row`), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import csv
from pathlib import Path


def read_rows(path: Path) -> list[dict]:
    """The rows of ``path`` as dicts of strings ([] when there is no file yet)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: Path, fields: list[str], row: dict) -> None:
    """Append ``row`` to ``path``, with the header ``fields`` first when the file is new."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerow(row)
