"""Atomic writers (base.files over base.renames): nothing half-written, nothing replaced unless asked,
nothing stranded.

The process tests start real writers. They import ``llmrank_graph.base.files`` without the package's
``__init__`` (which pulls in torch and transformers), so that they start within milliseconds of
each other and the suite stays fast.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from llmrank_graph.base import files as _io
from llmrank_graph.base import renames
from llmrank_graph.base.files import (
    atomic_directory,
    atomic_file,
    check_output_path,
    save_safetensors_atomic,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from llmrank_graph.errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    LLMRankGraphError,
    OutputExistsError,
    WorkFailedError,
    WriteFailedError,
)

PACKAGE_DIR = Path(_io.__file__).parents[1]  # llmrank_graph/
POSIX = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and pids")


@pytest.fixture(params=["renameat2", "fallback"])
def rename_impl(request, monkeypatch):
    """Run a test with Linux's renameat2 and with the portable fallback (hard link / mkdir lock)."""
    if request.param == "renameat2":
        if not renames.renameat2_available():
            pytest.skip("renameat2 is not available here")
    else:
        monkeypatch.setattr(renames, "renameat2_available", lambda: False)
    return request.param


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------------- directories
def test_directory_written_and_nothing_left_beside(tmp_path, rename_impl):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-") and tmp.is_dir()
        assert not target.exists()
        (tmp / "a.txt").write_text("a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
    assert (target / "a.txt").read_text() == "a" and (target / "sub" / "b.txt").read_text() == "b"
    assert _entries(tmp_path) == ["out"]


def test_existing_directory_is_refused_before_the_work(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    entered = []
    with pytest.raises(OutputExistsError, match=r"`directory` .*out' already exists; pass overwrite=True") as err:
        with atomic_directory(target):
            entered.append(True)
    assert entered == []
    assert isinstance(err.value, FileExistsError) and isinstance(err.value, LLMRankGraphError)
    assert (target / "keep.txt").read_text() == "x" and _entries(tmp_path) == ["out"]


def test_overwrite_replaces_a_directory(tmp_path, rename_impl):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_directory(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _entries(target) == ["new.txt"]
    assert _entries(tmp_path) == ["out"]


def test_overwrite_never_turns_a_file_into_a_directory(tmp_path):
    target = tmp_path / "out"
    target.write_text("a file")
    with pytest.raises(OutputExistsError, match="exists and is not a directory"):
        with atomic_directory(target, overwrite=True):
            pass
    assert target.read_text() == "a file" and _entries(tmp_path) == ["out"]


def test_a_file_that_appears_is_not_replaced_by_the_directory(tmp_path, rename_impl):
    target = tmp_path / "out"
    with pytest.raises(OutputExistsError, match="exists and is not a directory"):
        with atomic_directory(target, overwrite=True) as tmp:
            (tmp / "a").write_text("a")
            target.write_text("written meanwhile")
    assert target.read_text() == "written meanwhile" and _entries(tmp_path) == ["out"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_removes_the_temporary_and_keeps_the_old(tmp_path, error):
    target = tmp_path / "out"
    with pytest.raises(type(error)):
        with atomic_directory(target) as tmp:
            (tmp / "half.bin").write_bytes(b"x" * 10)
            raise error
    assert _entries(tmp_path) == []

    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(type(error)):
        with atomic_directory(target, overwrite=True) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise error
    assert _entries(tmp_path) == ["out"] and _entries(target) == ["old.txt"]


def test_a_directory_that_appears_meanwhile_is_not_replaced(tmp_path, rename_impl):
    target = tmp_path / "out"
    with pytest.raises(OutputExistsError, match="created while this write was in progress"):
        with atomic_directory(target) as tmp:
            (tmp / "mine.txt").write_text("mine")
            target.mkdir()  # another writer finished first
            (target / "theirs.txt").write_text("theirs")
    assert _entries(target) == ["theirs.txt"] and _entries(tmp_path) == ["out"]


def test_even_an_empty_directory_that_appears_is_not_replaced(tmp_path, rename_impl):
    # rename(2) would silently replace an empty directory; the no-replace rename must not.
    target = tmp_path / "out"
    with pytest.raises(OutputExistsError):
        with atomic_directory(target) as tmp:
            (tmp / "mine.txt").write_text("mine")
            target.mkdir()
    assert _entries(target) == [] and _entries(tmp_path) == ["out"]


def test_failed_final_rename_restores_the_old_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(renames, "renameat2_available", lambda: False)  # the move-aside path
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real = renames.rename_noreplace

    def failing(src, dst):
        if Path(src).name.startswith(".out.tmp-") and Path(dst) == target:
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(renames, "rename_noreplace", failing)
    with pytest.raises(OSError, match="Input/output error"):
        with atomic_directory(target, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
    assert _entries(target) == ["old.txt"] and _entries(tmp_path) == ["out"]


def test_check_existing_can_refuse_a_replacement(tmp_path):
    target = tmp_path / "out"
    target.mkdir()

    def only_ours(path):
        if not (path / "meta.json").is_file():
            raise OutputExistsError(f"{path} was not written by llmrank_graph; pass --force")

    with pytest.raises(OutputExistsError, match="pass --force"):
        with atomic_directory(target, overwrite=True, check_existing=only_ours):
            pass
    (target / "meta.json").write_text("{}")
    with atomic_directory(target, overwrite=True, check_existing=only_ours) as tmp:
        (tmp / "meta.json").write_text('{"new": 1}')
    assert json.loads((target / "meta.json").read_text()) == {"new": 1}


def test_umask_applies_not_0700(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
        write_text_atomic(tmp_path / "file.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "file.txt").stat().st_mode & 0o777 == 0o640


def test_parents_are_created(tmp_path):
    with atomic_directory(tmp_path / "a" / "b" / "out") as tmp:
        (tmp / "x").write_text("x")
    assert (tmp_path / "a" / "b" / "out" / "x").is_file()


def test_works_outside_the_main_thread(tmp_path):
    errors = []

    def work():
        try:
            with atomic_directory(tmp_path / "out") as tmp:
                (tmp / "x").write_text("x")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert errors == [] and (tmp_path / "out" / "x").is_file()


# ----------------------------------------------------------------------------- files
def test_file_writers(tmp_path, rename_impl):
    p = write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert p == tmp_path / "b.bin" and p.read_bytes() == b"\x00\x01"
    write_text_atomic(tmp_path / "t.txt", "h\u00e9")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "h\u00e9"
    write_json_atomic(tmp_path / "j.json", {"b": 1, "a": [1, 2]}, sort_keys=True)
    text = (tmp_path / "j.json").read_text()
    assert text.endswith("\n") and json.loads(text) == {"a": [1, 2], "b": 1} and text.index('"a"') < text.index('"b"')

    with pytest.raises(OutputExistsError, match="already exists; pass overwrite=True"):
        write_text_atomic(tmp_path / "t.txt", "other")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "h\u00e9"
    write_text_atomic(tmp_path / "t.txt", "other", overwrite=True)
    assert (tmp_path / "t.txt").read_text() == "other"
    assert _entries(tmp_path) == ["b.bin", "j.json", "t.txt"]


def test_file_never_replaces_a_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputExistsError, match="exists and is a directory"):
        write_text_atomic(tmp_path / "d", "x", overwrite=True)
    assert (tmp_path / "d").is_dir()


def test_file_that_appears_meanwhile_is_not_replaced(tmp_path, rename_impl):
    target = tmp_path / "f.txt"
    with pytest.raises(OutputExistsError, match="created while this write was in progress"):
        with atomic_file(target) as tmp:
            tmp.write_text("mine")
            target.write_text("theirs")
    assert target.read_text() == "theirs" and _entries(tmp_path) == ["f.txt"]


def test_failed_file_write_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(tmp_path / "f.txt") as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert _entries(tmp_path) == []


def test_writer_argument_errors(tmp_path):
    with pytest.raises(InvalidArgumentTypeError, match="`data` must be bytes"):
        write_bytes_atomic(tmp_path / "x", "text")
    with pytest.raises(InvalidArgumentTypeError, match="`text` must be a str"):
        write_text_atomic(tmp_path / "x", b"bytes")
    assert _entries(tmp_path) == []


def test_safetensors_respects_overwrite(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    path = save_safetensors_atomic({"x": torch.zeros(2)}, tmp_path / "a.safetensors", {"k": "v"})
    with pytest.raises(OutputExistsError):
        save_safetensors_atomic({"x": torch.ones(2)}, path, {})
    assert load_file(str(path))["x"].sum() == 0
    save_safetensors_atomic({"x": torch.ones(2)}, path, {}, overwrite=True)
    assert load_file(str(path))["x"].sum() == 2


# ----------------------------------------------------------------------------- checks
def test_check_output_path(tmp_path):
    assert check_output_path(tmp_path / "new" / "deeper", kind="directory") == tmp_path / "new" / "deeper"
    with pytest.raises(InvalidArgumentTypeError, match="`out` must be a str or a path; got 3"):
        check_output_path(3, arg="out")
    for bad in ("", "/", ".."):
        with pytest.raises(InvalidArgumentError, match="`path` must be a path that names a file or directory"):
            check_output_path(bad)
    (tmp_path / "f").write_text("x")
    with pytest.raises(InvalidArgumentError, match=r"is not a directory\); got '.*f/out'"):
        check_output_path(tmp_path / "f" / "out")
    with pytest.raises(OutputExistsError, match="exists and is not a directory"):
        check_output_path(tmp_path / "f", kind="directory", overwrite=True)
    with pytest.raises(InvalidArgumentError, match="`kind` must be one of 'file', 'directory'"):
        check_output_path(tmp_path / "x", kind="dir")
    with pytest.raises(InvalidArgumentTypeError, match="`overwrite` must be a bool"):
        check_output_path(tmp_path / "x", overwrite="yes")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_check_output_path_unwritable_parent(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        with pytest.raises(InvalidArgumentError, match="is not writable"):
            check_output_path(locked / "out", kind="directory")
    finally:
        locked.chmod(0o755)


def test_renameat2_never_replaces(tmp_path):
    if not renames.renameat2_available():
        pytest.skip("renameat2 is not available here")
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    with pytest.raises(FileExistsError):
        renames.rename_noreplace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "b"


# ----------------------------------------------------------------------------- stale temporaries
@POSIX
def test_stale_temporaries_of_dead_writers_are_swept(tmp_path):
    dead = _dead_pid()
    stale_dir = tmp_path / renames.sibling_name("out", "tmp", pid=dead)
    stale_dir.mkdir()
    (stale_dir / "half").write_text("x")
    stale_file = tmp_path / renames.sibling_name("out", "tmp", pid=dead)
    stale_file.write_text("x")
    alive = tmp_path / renames.sibling_name("out", "tmp", pid=os.getpid())  # a live writer's: kept
    alive.mkdir()
    foreign = tmp_path / f".out.tmp-00000000-{dead}-0123abcd"  # another host's: kept
    foreign.mkdir()
    other_name = tmp_path / renames.sibling_name("other", "tmp", pid=dead)  # another path's: kept
    other_name.mkdir()
    with atomic_directory(tmp_path / "out") as tmp:
        (tmp / "x").write_text("x")
    assert _entries(tmp_path) == sorted(["out", alive.name, foreign.name, other_name.name])


@POSIX
def test_stale_moved_aside_directory_is_put_back(tmp_path):
    # A writer killed between moving the old output aside and renaming the new one in.
    old = tmp_path / renames.sibling_name("out", "old", pid=_dead_pid())
    old.mkdir()
    (old / "precious.txt").write_text("only copy")
    with pytest.raises(OutputExistsError):
        with atomic_directory(tmp_path / "out"):
            pass
    assert _entries(tmp_path) == ["out"] and (tmp_path / "out" / "precious.txt").read_text() == "only copy"


# ----------------------------------------------------------------------------- real processes
_PRELUDE = textwrap.dedent("""
    import os, sys, time, types
    from pathlib import Path
    pkg = types.ModuleType("llmrank_graph")
    pkg.__path__ = [{package!r}]
    sys.modules["llmrank_graph"] = pkg
    from llmrank_graph.base import files as _io, renames
    from llmrank_graph.errors import OutputExistsError
    if not {use_renameat2!r}:
        renames.renameat2_available = lambda: False
""")


def _script(body: str, use_renameat2: bool = True) -> str:
    return _PRELUDE.format(package=str(PACKAGE_DIR), use_renameat2=use_renameat2) + textwrap.dedent(body)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the writer exited early: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the writer never got ready")
        time.sleep(0.01)


_WRITER = """
    target, sync, i, n, kind = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
    writer = _io.atomic_directory if kind == "directory" else _io.atomic_file
    try:
        with writer(target) as tmp:
            if kind == "directory":
                (tmp / "writer.txt").write_text(i)
            else:
                tmp.write_text(i)
            # Every writer is past the existence check before any of them renames.
            (sync / f"entered-{i}").write_text("")
            deadline = time.monotonic() + 60
            while len(list(sync.iterdir())) < n and time.monotonic() < deadline:
                time.sleep(0.002)
    except OutputExistsError:
        print("exists")
        sys.exit(3)
    print("ok")
"""


@POSIX
@pytest.mark.parametrize("kind", ["directory", "file"])
def test_concurrent_writers_exactly_one_wins(tmp_path, rename_impl, kind):
    n = 4
    out_dir, sync = tmp_path / "outputs", tmp_path / "sync"
    out_dir.mkdir()
    sync.mkdir()
    target = out_dir / "graph"
    code = _script(_WRITER, use_renameat2=rename_impl == "renameat2")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(target), str(sync), str(i), str(n), kind],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]
    results = [p.communicate(timeout=120) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0] + [3] * (n - 1), results
    winner = codes.index(0)
    written = (target / "writer.txt") if kind == "directory" else target
    assert written.read_text() == str(winner)
    assert _entries(out_dir) == ["graph"]


_SLOW_WRITER = """
    target, ready, overwrite = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
    with _io.atomic_directory(target, overwrite=overwrite) as tmp:
        (tmp / "new.txt").write_text("new")
        ready.write_text(str(tmp))
        time.sleep(120)
"""


@POSIX
@pytest.mark.parametrize("overwrite", [False, True])
def test_sigterm_removes_the_temporary_directory(tmp_path, overwrite):
    out_dir = tmp_path / "outputs"
    out_dir.mkdir()
    target, ready = out_dir / "out", tmp_path / "ready"
    if overwrite:
        target.mkdir()
        (target / "old.txt").write_text("old")
    proc = subprocess.Popen([sys.executable, "-c", _script(_SLOW_WRITER), str(target), str(ready),
                             "1" if overwrite else "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(ready, proc)
    assert Path(ready.read_text()).is_dir()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == _io.SIGTERM_EXIT_STATUS
    assert _entries(out_dir) == (["out"] if overwrite else [])
    if overwrite:
        assert _entries(target) == ["old.txt"]


@POSIX
def test_kill_9_leaves_a_temporary_that_the_next_write_sweeps(tmp_path):
    out_dir = tmp_path / "outputs"
    out_dir.mkdir()
    target, ready = out_dir / "out", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _script(_SLOW_WRITER), str(target), str(ready), "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(ready, proc)
    proc.kill()
    proc.communicate(timeout=60)  # reaped: its pid is gone
    stranded = Path(ready.read_text())
    assert stranded.is_dir() and _entries(out_dir) == [stranded.name]
    with atomic_directory(target) as tmp:
        (tmp / "x").write_text("x")
    assert _entries(out_dir) == ["out"]


@POSIX
def test_sigterm_handler_is_installed_only_for_the_write(tmp_path):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers live in the main thread")
    before = signal.getsignal(signal.SIGTERM)
    if before is not signal.SIG_DFL:
        pytest.skip("SIGTERM already has a handler in this process")
    with atomic_directory(tmp_path / "out"):
        assert signal.getsignal(signal.SIGTERM) is _io._on_sigterm
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def mine(signum, frame):  # the caller's own handler is left alone
        pass

    signal.signal(signal.SIGTERM, mine)
    try:
        with atomic_directory(tmp_path / "out2"):
            assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


@POSIX
def test_interrupts_during_the_final_renames_wait_for_them():
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is handled by someone else here")
    done = []
    with pytest.raises(KeyboardInterrupt):
        with _io._signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append(True)  # reached: the interrupt waited
    assert done == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ----------------------------------------------------------------------------- the system refusing a write
DISK_FULL = OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_refused_write_is_named_and_undone(tmp_path, kind):
    target = tmp_path / "new" / "deeper" / "out"
    writer = atomic_file if kind == "file" else atomic_directory
    with pytest.raises(WriteFailedError) as info:
        with writer(target) as tmp:
            (tmp / "half" if kind == "directory" else tmp).write_bytes(b"half")
            raise DISK_FULL
    e = info.value
    assert str(e) == f"could not write {target}: No space left on device"
    assert (e.path, e.reason, e.errno) == (str(target), "No space left on device", errno.ENOSPC)
    assert isinstance(e.__cause__, OSError) and e.__cause__.errno == errno.ENOSPC
    assert _entries(tmp_path) == []  # no temporary, and the parents it made are gone


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_refused_overwrite_keeps_the_old_output_and_existing_parents(tmp_path, kind):
    target = tmp_path / "kept" / "out"
    target.parent.mkdir()
    if kind == "file":
        target.write_text("old")
    else:
        target.mkdir()
        (target / "old.txt").write_text("old")
    writer = atomic_file if kind == "file" else atomic_directory
    with pytest.raises(WriteFailedError, match="could not write .*out: File too large"):
        with writer(target, overwrite=True):
            raise OSError(errno.EFBIG, "File too large")
    assert _entries(tmp_path) == ["kept"] and _entries(target.parent) == ["out"]
    assert (target.read_text() if kind == "file" else (target / "old.txt").read_text()) == "old"


def test_the_reason_is_the_system_s_not_a_library_s_wording(tmp_path):
    # pyarrow: OSError(27, "Error writing bytes to file. Detail: [errno 27] File too large")
    with pytest.raises(WriteFailedError, match=r"could not write .*t\.parquet: File too large$"):
        with atomic_file(tmp_path / "t.parquet"):
            raise OSError(errno.EFBIG, "Error writing bytes to file. Detail: [errno 27] File too large")
    with pytest.raises(WriteFailedError, match=r": waited 30 s for the lock$"):  # an OSError without errno
        with atomic_file(tmp_path / "t.parquet"):
            raise TimeoutError("waited 30 s for the lock")


@pytest.mark.parametrize("library", ["tokenizers", "safetensors"])
def test_io_errors_of_the_rust_libraries_are_refusals_too(tmp_path, library):
    # tokenizers raises a plain Exception, safetensors its SafetensorError; both end with Rust's "(os error N)".
    from safetensors import SafetensorError

    error = (Exception("No space left on device (os error 28)") if library == "tokenizers" else
             SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"))
    with pytest.raises(WriteFailedError, match=r"could not write .*model: No space left on device$") as info:
        with atomic_directory(tmp_path / "model"):
            raise error
    assert info.value.errno == errno.ENOSPC and _entries(tmp_path) == []


@pytest.mark.parametrize("error", [ValueError("not a write failure (os error 28)"), RuntimeError("boom"),
                                   KeyboardInterrupt()])
def test_other_errors_pass_unchanged_and_still_undo(tmp_path, error):
    with pytest.raises(type(error)) as info:
        with atomic_file(tmp_path / "a" / "b.txt") as tmp:
            tmp.write_text("half")
            raise error
    assert info.value is error and _entries(tmp_path) == []


def test_an_output_that_appeared_is_not_a_refused_write(tmp_path):
    target = tmp_path / "d" / "f.txt"
    with pytest.raises(OutputExistsError, match="created while this write was in progress"):
        with atomic_file(target) as tmp:
            tmp.write_text("mine")
            target.write_text("theirs")
    assert target.read_text() == "theirs"


def test_a_nested_write_is_named_under_the_outer_output(tmp_path):
    target = tmp_path / "pruned-model"
    with pytest.raises(WriteFailedError) as info:
        with atomic_directory(target) as tmp:
            with atomic_file(tmp / "llmrank_graph" / "neuron_mask.safetensors"):
                raise DISK_FULL
    assert str(info.value) == f"could not write {target}: No space left on device"
    assert _entries(tmp_path) == []


def test_a_failed_safetensors_write_leaves_nothing(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")  # what safetensors had written when the disk filled up
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(WriteFailedError, match=r"could not write .*m\.safetensors: No space left on device"):
        save_safetensors_atomic({"x": torch.zeros(2)}, tmp_path / "new" / "m.safetensors", {})
    assert _entries(tmp_path) == []


def test_a_writer_of_its_own_names_its_failures_the_same_way(tmp_path):
    claim = tmp_path / "runs" / "a.claim"
    with pytest.raises(WriteFailedError, match=r"could not write .*a\.claim: Disk quota exceeded$"):
        with _io.write_failures_named(claim):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
    error = ValueError("not the system's refusal")
    with pytest.raises(ValueError) as info:
        with _io.write_failures_named(claim):
            raise error
    assert info.value is error


def test_write_failed_error_is_an_os_error_and_a_work_failure():
    import pickle

    e = WriteFailedError("out", "No space left on device", errno.ENOSPC)
    assert isinstance(e, OSError) and isinstance(e, WorkFailedError) and e.exit_status == 1
    again = pickle.loads(pickle.dumps(e))
    assert (str(again), again.errno) == ("could not write out: No space left on device", errno.ENOSPC)


# ----------------------------------------------------------------------------- permissions
@POSIX
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_that_other_libraries_create_0600_follow_the_umask(tmp_path, umask):
    torch = pytest.importorskip("torch")
    old = os.umask(umask)
    try:
        path = save_safetensors_atomic({"x": torch.zeros(2)}, tmp_path / "a.safetensors", {})
        with atomic_directory(tmp_path / "d") as tmp:
            os.close(os.open(tmp / "private", os.O_WRONLY | os.O_CREAT, 0o600))  # as safetensors creates its files
            os.mkdir(tmp / "sub", 0o700)
            (tmp / "sub" / "f").write_text("x")
    finally:
        os.umask(old)
    files, dirs = 0o666 & ~umask, 0o777 & ~umask
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in [path, *tmp_path.rglob("*")]}
    assert modes == {"a.safetensors": files, "d": dirs, "d/private": files, "d/sub": dirs, "d/sub/f": files}


def test_safetensors_leaves_no_temporary_of_its_own_beside_the_file(tmp_path):
    torch = pytest.importorskip("torch")
    save_safetensors_atomic({"x": torch.zeros(2)}, tmp_path / "a.safetensors", {})
    assert _entries(tmp_path) == ["a.safetensors"]
