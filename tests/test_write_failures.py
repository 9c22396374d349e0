"""Writes that the system refuses midway, and the permissions of what is written: real processes.

Every command that writes (``export``, ``rank``, ``prune``, ``inspect --out``, ``sweep``,
``report``) runs as a real ``llmrank-graph`` process on a tiny saved model, and meets:

- a full disk: a 64 kB tmpfs, filled to one free page, under an old output that it is asked to
  replace (the test mounts; it skips, saying why, where it may not);
- a file-size limit (``ulimit -f``: ``RLIMIT_FSIZE`` in the child, SIGXFSZ ignored, so a write
  past the limit fails with EFBIG), writing a new output under parent directories that do not
  exist yet;
- a read-only target: the old output bind-mounted read-only onto itself, so that replacing it
  fails at the final rename, after all the work.

Each exits 1 with ``error: could not write OUT: REASON`` and no traceback, leaves the old output
as it was, no temporary, and no directory it created. ``sweep`` and ``report`` write many files
into ``--out``: their message names the file inside ``--out`` that failed, and a sweep keeps the
runs it finished (it resumes). A read-only ``--out`` that they write into is refused before any
work (exit 2).

Permissions: under umask 022 and 077, every file and directory that each command writes has
0o666 or 0o777 masked, including the safetensors files that the safetensors library itself
creates 0o600 (``model.safetensors``, the neuron mask, the sweep's calibration statistics).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from _tiny import WORDS, save_tiny_model, tiny_llama

import llmrank_graph as lg

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="tmpfs, bind mounts and RLIMIT_FSIZE as on Linux")

#: The file-size limit of the ``ulimit -f`` cases: every output of the tiny model is larger.
FILE_SIZE_LIMIT = 1024
#: Free space left on the full disk: one page, less than any output of the tiny model needs.
FREE_BYTES = 4096
SMALL = ["--n-samples", "2", "--seq-len", "16", "--eval-samples", "2"]


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("llmrank-graph")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "llmrank_graph"]


ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


# ----------------------------------------------------------------------------- inputs
@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A tiny model with a tokenizer, a text, a graph, and a finished tiny sweep (for ``report``)."""
    root = tmp_path_factory.mktemp("inputs")
    f = {"model": save_tiny_model(root / "model", m=16), "text": root / "corpus.txt", "graph": root / "graph"}
    f["text"].write_text(" ".join(WORDS * 200))
    lg.export_graph(tiny_llama(vocab=64, m=16)).to_parquet(f["graph"])
    f["results"] = root / "results"
    subprocess.run([*_cli(), *_sweep_argv(f, f["results"])], env=ENV, check=True, capture_output=True,
                   timeout=600)
    return f


def _sweep_argv(f, out: Path) -> list[str]:
    return ["sweep", "--out", str(out), "--model", str(f["model"]), "--methods", "magnitude", "--amounts", "0.25",
            "--allocations", "local", "--texts", str(f["text"]), "--eval-texts", str(f["text"]), *SMALL,
            "--throughput-rounds", "1"]


# ----------------------------------------------------------------------------- the commands
def _directory_with(name: str, text: str) -> Callable[[Path, dict], None]:
    def make(out: Path, f: dict) -> None:
        out.mkdir()
        (out / name).write_text(text)
    return make


def _copy_of(key: str) -> Callable[[Path, dict], None]:
    return lambda out, f: shutil.copytree(f[key], out)


def _file_with(data: bytes) -> Callable[[Path, dict], None]:
    return lambda out, f: out.write_bytes(data)


@dataclass(frozen=True)
class Command:
    """One command that writes: how to run it into ``out``, and the old output it may replace."""

    name: str
    out_name: str
    argv: Callable[[dict, Path], list[str]]
    replace: tuple[str, ...]  # the options that replace an old output
    old: Callable[[Path, dict], None]  # makes an old output at ``out``
    into: bool = False  # writes files into --out (sweep, report) rather than replacing --out whole


COMMANDS = [
    Command("export", "graph", lambda f, o: ["export", "--model", str(f["model"]), "--out", str(o)],
            ("--overwrite",), _copy_of("graph")),
    Command("rank", "scores.parquet", lambda f, o: ["rank", "--model", str(f["model"]), "--out", str(o)],
            ("--overwrite",), _file_with(b"old scores")),
    Command("prune", "pruned", lambda f, o: ["prune", "--model", str(f["model"]), "--texts", str(f["text"]),
                                             "--eval-texts", str(f["text"]), *SMALL, "--amount", "0.25",
                                             "--out", str(o)],
            ("--overwrite", "--force"), _directory_with("config.json", "{}")),
    Command("inspect", "inspected", lambda f, o: ["inspect", "--model", str(f["model"]), "--out", str(o)],
            ("--overwrite",), _directory_with("report.json", "{}")),
    Command("sweep", "results", _sweep_argv, (), lambda out, f: out.mkdir(), into=True),
    Command("report", "report", lambda f, o: ["report", str(f["results"]), "--out", str(o)],
            (), _directory_with("report.html", "old report"), into=True),
]
IDS = [c.name for c in COMMANDS]


def _run(argv: list[str], preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run([*_cli(), *argv], env=ENV, capture_output=True, text=True, timeout=600,
                          preexec_fn=preexec_fn)


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``, with the bytes of each file (None for a directory)."""
    return {p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes() for p in root.rglob("*")}


def _temporaries(root: Path) -> list[str]:
    return [p for p in _tree(root) if ".tmp-" in p or ".old-" in p or Path(p).name.startswith(".tmp")]


def _refused_to_write(proc: subprocess.CompletedProcess, out: Path, cmd: Command, reason: str) -> None:
    """Exit 1, ``error: could not write OUT: REASON``, no traceback (for sweep and report: a file in OUT)."""
    err = proc.stderr
    assert proc.returncode == 1, (proc.returncode, err)
    assert "Traceback" not in err and "This is a bug" not in err, err
    line = err[err.index("error: "):].splitlines()[0]
    if cmd.into:
        assert line.startswith(f"error: could not write {out}/") and line.endswith(f": {reason}"), line
    else:
        assert line == f"error: could not write {out}: {reason}", line


# ----------------------------------------------------------------------------- a full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 64 kB tmpfs, unmounted afterwards; the test skips where it may not mount."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root); the ulimit -f cases cover the rest")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, free: int) -> None:
    """Fill ``disk`` until only ``free`` bytes are left."""
    st = os.statvfs(disk)
    (disk / "filler").write_bytes(b"\0" * max(st.f_bavail * st.f_frsize - free, 0))


@pytest.mark.parametrize("cmd", COMMANDS, ids=IDS)
def test_a_full_disk_leaves_the_old_output(inputs, small_disk, cmd):
    out = small_disk / cmd.out_name
    cmd.old(out, inputs)
    _fill(small_disk, FREE_BYTES)
    before = _tree(small_disk)
    proc = _run([*cmd.argv(inputs, out), *cmd.replace])
    _refused_to_write(proc, out, cmd, "No space left on device")
    assert _temporaries(small_disk) == []
    if cmd.name == "sweep":  # it keeps what it finished, inside its directory
        after = _tree(small_disk)
        assert {p: v for p, v in after.items() if p in before} == before
        assert all(p.startswith(f"{cmd.out_name}/") for p in after.keys() - before.keys())
    else:
        assert _tree(small_disk) == before


# ----------------------------------------------------------------------------- a file-size limit
def _file_size_limit(nbytes: int):
    def limit():  # in the child, before exec: SIG_IGN survives exec, so the write gets EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit


@pytest.mark.parametrize("cmd", COMMANDS, ids=IDS)
def test_a_file_size_limit_leaves_no_new_directory(inputs, tmp_path, cmd):
    base = tmp_path / "outputs"
    base.mkdir()
    out = base / "new" / "deeper" / cmd.out_name
    proc = _run(cmd.argv(inputs, out), preexec_fn=_file_size_limit(FILE_SIZE_LIMIT))
    _refused_to_write(proc, out, cmd, "File too large")
    assert _temporaries(base) == []
    if cmd.name == "sweep":  # the results directory holds what the sweep finished; it resumes
        assert all(p == "new" or p.startswith("new/") for p in _tree(base))
    else:
        assert _tree(base) == {}


# ----------------------------------------------------------------------------- a read-only target
@pytest.fixture
def read_only(tmp_path):
    """``read_only(path)`` bind-mounts ``path`` read-only onto itself; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root (CI runs as root)")
    mounts: list[Path] = []

    def bind(path: Path) -> None:
        for argv in (["mount", "--bind", str(path), str(path)], ["mount", "-o", "remount,bind,ro", str(path)]):
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot bind-mount read-only here: {done.stderr.strip()}")
            if argv[1] == "--bind":
                mounts.append(path)

    yield bind
    for path in reversed(mounts):
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if not c.into], ids=[c.name for c in COMMANDS if not c.into])
def test_a_read_only_target_is_left_as_it_was(inputs, tmp_path, read_only, cmd):
    base = tmp_path / "outputs"
    base.mkdir()
    out = base / cmd.out_name
    cmd.old(out, inputs)
    read_only(out)
    before = _tree(base)
    proc = _run([*cmd.argv(inputs, out), *cmd.replace])
    _refused_to_write(proc, out, cmd, "Device or resource busy")  # the rename onto a mount point
    assert _tree(base) == before


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c.into], ids=[c.name for c in COMMANDS if c.into])
def test_a_read_only_directory_to_write_into_is_refused_before_any_work(inputs, tmp_path, read_only, cmd):
    out = tmp_path / cmd.out_name
    out.mkdir()
    read_only(out)
    proc = _run(cmd.argv(inputs, out))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "is not writable" in proc.stderr and str(out) in proc.stderr
    assert _tree(out) == {}


# ----------------------------------------------------------------------------- permissions
# One child runs every command through llmrank_graph.cli.main under each umask in turn and
# reports the mode of everything written: {umask: {command: {path: [mode, is a directory]}}}.
_WRITE_ALL = """
import json, os, stat, sys
from pathlib import Path
from llmrank_graph.cli import main

f = json.loads(sys.argv[1])
small = {small}
report = {{}}
for umask in ({umasks}):
    os.umask(umask)
    base = Path(sys.argv[2]) / oct(umask)
    runs = {{
        "export": ["export", "--model", f["model"], "--out", str(base / "graph")],
        "graphml": ["export", "--model", f["model"], "--format", "graphml", "--out", str(base / "graph.graphml")],
        "rank": ["rank", "--model", f["model"], "--out", str(base / "scores.csv")],
        "prune": ["prune", "--model", f["model"], "--texts", f["text"], "--eval-texts", f["text"], *small,
                  "--amount", "0.25", "--out", str(base / "pruned")],
        "inspect": ["inspect", "--model", f["model"], "--out", str(base / "inspected")],
        "sweep": ["sweep", "--out", str(base / "results"), "--model", f["model"], "--methods", "magnitude",
                  "--amounts", "0.25", "--allocations", "local", "--texts", f["text"], "--eval-texts", f["text"],
                  *small, "--throughput-rounds", "1", "--save-scores", "--save-masks"],
        "report": ["report", str(base / "results"), "--out", str(base / "report")],
    }}
    modes = report[umask] = {{}}
    for name, argv in runs.items():
        assert main(argv) == 0, name
        out = Path(argv[argv.index("--out") + 1])
        paths = [out] if out.is_file() else [out, *out.rglob("*")]
        modes[name] = {{p.relative_to(base).as_posix(): [stat.S_IMODE(p.stat().st_mode), p.is_dir()] for p in paths}}
print("MODES " + json.dumps(report))
"""
UMASKS = (0o022, 0o077)


@pytest.fixture(scope="module")
def modes(inputs, tmp_path_factory) -> dict[int, dict[str, dict[str, list]]]:
    """``{umask: {command: {path: [mode, is a directory]}}}`` for everything each command wrote under
    each umask, in one child process."""
    script = textwrap.dedent(_WRITE_ALL.format(small=SMALL, umasks=", ".join(map(str, UMASKS))))
    f = {"model": str(inputs["model"]), "text": str(inputs["text"])}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(f), str(tmp_path_factory.mktemp("umask"))],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("MODES "))
    return {int(k): v for k, v in json.loads(line[len("MODES "):]).items()}


#: What each command writes, and the file kinds that must be among it.
KINDS = {"export": ["graph/edges.parquet", "graph/meta.json"], "graphml": ["graph.graphml"],
         "rank": ["scores.csv"],
         "prune": ["pruned/model.safetensors", "pruned/llmrank_graph/neuron_mask.safetensors", "pruned/config.json",
                   "pruned/tokenizer.json"],
         "inspect": ["inspected/report.json"],
         "sweep": ["results/grid.json", "results/calibration", "results/runs", "results/scores"],
         "report": ["report/report.html"]}


@pytest.mark.parametrize("umask", UMASKS, ids=[f"{u:03o}" for u in UMASKS])
@pytest.mark.parametrize("command", list(KINDS))
def test_everything_written_follows_the_umask(modes, umask, command):
    written = modes[umask][command]
    for kind in KINDS[command]:
        assert any(p == kind or p.startswith(kind + "/") for p in written), (kind, sorted(written))
    if command == "sweep":  # the safetensors that the library writes itself are among them
        assert any(p.startswith("results/calibration/") and p.endswith(".safetensors") for p in written)
        assert any(p.endswith(".mask.safetensors") for p in written)
    wrong = {p: oct(mode) for p, (mode, is_dir) in written.items() if mode != (0o777 if is_dir else 0o666) & ~umask}
    assert wrong == {}
