"""Peak resident memory of a block of code, sampled from /proc (Linux) in a thread."""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: fall back to the process peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def peak_memory(interval: float = 0.002):
    """Yields a dict whose 'peak_extra' is the peak RSS above the starting RSS, in bytes."""
    out = {"start": rss_bytes(), "peak": 0}
    out["peak"] = out["start"]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            out["peak"] = max(out["peak"], rss_bytes())
            time.sleep(interval)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield out
    finally:
        stop.set()
        t.join()
        out["peak"] = max(out["peak"], rss_bytes())
        out["peak_extra"] = out["peak"] - out["start"]
