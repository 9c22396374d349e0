"""Run claims: each run of a results directory is computed once, however many sweeps share it.

Before a sweep computes a run it creates ``runs/<stem>.claim`` with ``O_CREAT | O_EXCL``: of
two sweeps that try at once, exactly one creates the file, and the other skips the run. The
claim holds the holder's host, pid, start time and a random token (JSON). While the run
computes, a background thread refreshes the file's mtime every :data:`HEARTBEAT_SECONDS` (its
heartbeat). The claim is removed when the run ends, complete or failed, or is interrupted.

A claim is *stale*, and is taken over, when

- its holder ran on this machine (same host name, boot and process namespace) and its pid is
  gone, e.g. after ``kill -9``; or
- its heartbeat is older than :data:`LEASE_SECONDS` (10 minutes), whoever holds it: a holder on
  another host that stopped, or a pid that was reused. A claim left empty by a holder killed
  between creating and writing it can only go stale this way.

Every change to a claim file (creating it, taking a stale one over, releasing it) is made
under the claim's lock, an ``O_EXCL`` file beside it held for microseconds: a sweep creates the
claim, or reads the holder and, when it is stale, deletes it and creates its own, all before
the next sweep may look. So of several sweeps racing for one run, or for one stale claim,
exactly one holds it after. A lock older than a minute was left by a sweep that died holding
it and is removed.

>>> import pathlib, tempfile
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> mine = RunClaim(tmp / "run.claim")
>>> mine.acquire() is None                      # claimed: None, no other holder
True
>>> other = RunClaim(tmp / "run.claim").acquire()   # a second try finds the holder
>>> other.pid == os.getpid(), other.live
(True, True)
>>> with mine.held():                           # heartbeat while the run computes
...     (tmp / "run.claim").exists()
True
>>> (tmp / "run.claim").exists()                # released when the run ends
False
>>> tmp.rmdir()
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..base.files import write_failures_named
from ..base.params import InstanceOf, Interval, validated

logger = logging.getLogger(__name__)

__all__ = ["RunClaim", "Holder", "LEASE_SECONDS", "HEARTBEAT_SECONDS", "CLAIM_SUFFIX", "CLAIM_FORMAT"]

#: A claim whose heartbeat (mtime) is older than this is stale, on any host.
LEASE_SECONDS = 600.0
#: How often a held claim's mtime is refreshed: well inside the lease.
HEARTBEAT_SECONDS = 30.0
#: Suffix of a claim file, beside the run's JSON in ``runs/``.
CLAIM_SUFFIX = ".claim"
#: ``format`` field of a claim file.
CLAIM_FORMAT = "llmrank_graph.sweep.claim"

# Tokens of the claims this process holds now: a claim with this process's pid and another
# token was left by an earlier process that had the same pid, and is stale.
_held_tokens: set[str] = set()
# A claim lock older than this was left by a sweep that died while holding it.
_TAKEOVER_LOCK_SECONDS = 60.0


def _machine() -> str:
    """This machine and process namespace: a pid is only meaningful where all three agree.

    The host name alone is not enough: two containers may share one, and a pid seen from
    another pid namespace or another boot means nothing here.
    """
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return "/".join(parts)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's; anything else: cannot tell, so alive
        return True
    try:  # a killed process that its parent has not yet reaped (a zombie) still answers
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


@dataclass(frozen=True)
class Holder:
    """Who holds a claim, as read from its file.

    Attributes
    ----------
    host : str
        Host name of the holder (``"?"`` when the file could not be read).
    pid : int or None
    started_at : str or None
        When the claim was made (ISO 8601, UTC).
    heartbeat_age : float
        Seconds since the holder last refreshed the claim.
    live : bool
        False when the claim is stale (and may be taken over).
    reason : str
        Why it is stale, or ``""``.
    token : str or None
        The claim's random token: tells two claims of one holder apart.
    """

    host: str
    pid: int | None
    started_at: str | None
    heartbeat_age: float
    live: bool
    reason: str = ""
    token: str | None = None

    def __str__(self) -> str:
        return f"{self.host}:{self.pid if self.pid is not None else '?'}"


def _read_holder(path: Path, lease: float) -> tuple[Holder, os.stat_result]:
    """The holder of the claim at ``path`` and the file's stat; FileNotFoundError when it is gone."""
    with open(path, "rb") as f:  # one open: the content and the stat are of the same file
        st = os.fstat(f.fileno())
        raw = f.read(4096)
    try:
        d = json.loads(raw.decode("utf-8"))
        if not isinstance(d, dict) or d.get("format") != CLAIM_FORMAT:
            raise ValueError("not a claim")
        host, pid, machine = str(d["host"]), int(d["pid"]), str(d["machine"])
        started, token = d.get("started_at"), d.get("token")
        if pid <= 0:  # os.kill(0 or -1, 0) would ask about whole process groups
            raise ValueError("not a process id")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        # Being written (created, not yet filled) or damaged: only the heartbeat can tell.
        host, pid, machine, started, token = "?", None, None, None, None
    age = max(0.0, time.time() - st.st_mtime)
    reason = ""
    if age > lease:
        reason = f"no heartbeat for {age:.0f} s (lease {lease:g} s)"
    elif machine == _machine() and pid is not None:
        if pid == os.getpid() and token not in _held_tokens:
            reason = f"left by an earlier process {pid} (this process has its pid now)"
        elif pid != os.getpid() and not _pid_alive(pid):
            reason = f"process {pid} is gone"
    return Holder(host, pid, started, age, not reason, reason, token), st


class RunClaim:
    """The claim on one run: :meth:`acquire` it, compute inside :meth:`held`, which releases it.

    Parameters
    ----------
    path : path-like
        The claim file (``runs/<stem>.claim``).
    lease : float
        Seconds without a heartbeat after which another holder's claim is stale.
    heartbeat : float
        Seconds between two refreshes of this claim while it is held; well under ``lease``.
    """

    @validated({"path": InstanceOf((str, os.PathLike), "a str or a path"),
                "lease": Interval(float, 0, None, closed="neither"),
                "heartbeat": Interval(float, 0, None, closed="neither")})
    def __init__(self, path: str | os.PathLike, *, lease: float = LEASE_SECONDS, heartbeat: float = HEARTBEAT_SECONDS):
        self.path = Path(path)
        self.lease, self.heartbeat = lease, heartbeat
        self.token = secrets.token_hex(8)
        self._acquired = False

    def acquire(self) -> Holder | None:
        """Claim the run: None when this sweep now holds it, else the live holder.

        A stale claim is taken over (see the module's notes). Every change to the claim file
        (create, take over, release) is made under the claim's lock, so when several sweeps race
        for one stale claim exactly one of them takes it and the others find it held.
        """
        with write_failures_named(self.path), self._locked():  # a full disk reads as any failed write
            if not self._create():
                try:
                    holder, _ = _read_holder(self.path, self.lease)
                except FileNotFoundError:  # removed by hand meanwhile
                    holder = None
                if holder is not None and holder.live:
                    return holder
                if holder is not None:
                    logger.info("took over the stale claim %s of %s (%s)", self.path, holder, holder.reason)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                if not self._create():  # only a process ignoring the lock gets here
                    return _read_holder(self.path, self.lease)[0]
            self._acquired = True
            _held_tokens.add(self.token)
            return None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the claim's lock: an ``O_EXCL`` file beside it, held for microseconds.

        A lock older than a minute was left by a sweep that died holding it, and is removed.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(f".{self.path.name}.lock")
        while True:
            try:
                os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                break
            except FileExistsError:
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - os.stat(lock).st_mtime > _TAKEOVER_LOCK_SECONDS:
                        os.unlink(lock)
                        continue
                time.sleep(0.002)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        except FileExistsError:
            return False
        data = {"format": CLAIM_FORMAT, "host": socket.gethostname(), "machine": _machine(), "pid": os.getpid(),
                "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "token": self.token}
        try:
            os.write(fd, json.dumps(data).encode("utf-8"))
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise
        os.close(fd)
        return True

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Refresh the claim's heartbeat while the block runs; release the claim when it ends."""
        if not self._acquired:
            raise RuntimeError("held() needs a claim acquired by acquire()")
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(stop,), name=f"heartbeat {self.path.name}",
                                daemon=True)
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()
            self.release()

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat):
            try:
                os.utime(self.path)
            except OSError as e:  # the run goes on; the claim may go stale and be taken over
                logger.warning("could not refresh the claim %s: %s", self.path, e)

    def release(self) -> None:
        """Remove the claim if this sweep still holds it."""
        if not self._acquired:
            return
        self._acquired = False
        _held_tokens.discard(self.token)
        with self._locked():
            try:
                holder, _ = _read_holder(self.path, self.lease)
            except FileNotFoundError:
                return
            if holder.token != self.token:
                logger.warning("the claim %s was taken over by %s while this sweep held it; that run may be "
                               "computed twice", self.path, holder)
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
