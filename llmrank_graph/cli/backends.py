"""``llmrank-graph backends``: which centrality backends can run here, and why not."""

from __future__ import annotations


def add_parser(sub) -> None:
    """Add this command to the ``llmrank-graph`` subparsers."""
    p = sub.add_parser("backends", help="list centrality backends and whether they can run here")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..centrality import list_backends

    for b in list_backends():
        state = "available" if b["available"] else f"unavailable: {b['reason']}"
        print(f"{b['name']:14} {', '.join(b['algorithms']):40} {state}")
    return 0
