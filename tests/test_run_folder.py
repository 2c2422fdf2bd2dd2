"""Run folders written as a unit, their lock, early output checks, and Ctrl-C / SIGTERM in the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from circuits import files, locks
from circuits.app.cli import main
from circuits.errors import CircuitError, Interrupted, OutputError, OutputLockedError
from circuits.files import check_output_dir, check_output_file, run_folder
from circuits.locks import lock_path, output_lock

RUN_FILES = ("circuit.json", "circuit.svg", "circuit.dot", "curve.json", "curve.png", "report.html")
FAST = [
    "--no-labels",
    "--no-edge-curve",
    "--curve-points",
    "2",
    "--examples",
    "8",
    "--eval-examples",
    "8",
    "--max-targets",
    "16",
    "--nodes",
    "40",
    "--dictionaries",
    "neurons",
    "--device",
    "cpu",
    "--quiet",
]


def old_run(folder: Path) -> dict[str, str]:
    """Fill ``folder`` with a stand-in for an earlier complete run; return {file name: sha256}."""
    folder.mkdir(parents=True)
    for i, name in enumerate(RUN_FILES):
        (folder / name).write_bytes(f"old run, file {i}: {name}\n".encode() + os.urandom(64))
    return snapshot(folder)


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def beside(folder: Path) -> list[str]:
    """Everything next to ``folder`` whose name starts with its name, other than itself (temporaries, locks)."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(folder.name) and p.name != folder.name)


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([shutil.which("true") or sys.executable, *([] if shutil.which("true") else ["-c", "pass"])])
    proc.wait()
    return proc.pid


def write_lock(folder: Path, pid: int, host: str | None = None) -> Path:
    lock = lock_path(folder)
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}) + "\n")
    return lock


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model (or training one) fails the test: the checks under test must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the output location was checked")

    monkeypatch.setattr("circuits.app.pipeline.load_setup", refuse)
    monkeypatch.setattr("circuits.app.loading.load_model", refuse)
    monkeypatch.setattr("circuits.toy.model.train_model", refuse)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    return captured.err


# ------------------------------------------------------------------------------------ run_folder


def test_run_folder_replaces_the_folder_only_when_complete(tmp_path: Path) -> None:
    out = tmp_path / "run"
    before = old_run(out)
    (out / "notes.txt").write_text("not written by the new run")
    before = snapshot(out)
    with run_folder(out, replaces="circuit.json") as staging:
        assert staging.parent == out.parent and staging.name.startswith(f"run.tmp-{os.getpid()}-")
        assert list(staging.iterdir()) == []
        assert lock_path(out).exists()
        (staging / "circuit.json").write_text("new")
        (staging / "extra.txt").write_text("new too")
        assert snapshot(out) == before  # nothing of the new run shows before the end
    assert sorted(p.name for p in out.iterdir()) == ["circuit.json", "extra.txt"]  # replaced as a whole
    assert (out / "circuit.json").read_text() == "new"
    assert beside(out) == []


def test_run_folder_without_a_one_step_swap_renames_the_old_folder_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Path, Path]] = []

    def no_exchange(a: Path, b: Path) -> bool:
        calls.append((a, b))
        return False

    monkeypatch.setattr(files, "_exchange", no_exchange)
    out = tmp_path / "run"
    old_run(out)
    with run_folder(out, replaces="circuit.json") as staging:
        (staging / "circuit.json").write_text("new")
    assert calls and [p.name for p in out.iterdir()] == ["circuit.json"]
    assert (out / "circuit.json").read_text() == "new"
    assert beside(out) == []


def test_run_folder_into_a_new_folder_creates_its_parents(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "run"
    with run_folder(out) as staging:
        (staging / "x").write_text("1")
    assert (out / "x").read_text() == "1" and beside(out) == []


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_an_exception_inside_leaves_the_old_folder_and_no_temporary(tmp_path: Path, error: BaseException) -> None:
    out = tmp_path / "run"
    before = old_run(out)
    with pytest.raises(type(error)) as raised, run_folder(out, replaces="circuit.json") as staging:
        (staging / "circuit.json").write_text("half a run")
        raise error
    assert snapshot(out) == before
    assert beside(out) == []
    if isinstance(error, KeyboardInterrupt):
        assert isinstance(raised.value, Interrupted) and str(raised.value) == f"{out} was left as it was"


def test_an_interrupted_first_run_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(Interrupted, match="nothing was written"), run_folder(out) as staging:
        (staging / "circuit.json").write_text("half a run")
        raise KeyboardInterrupt
    assert not out.exists() and beside(out) == []


def test_leftovers_of_a_killed_run_are_cleared_and_an_old_folder_set_aside_comes_back(tmp_path: Path) -> None:
    out = tmp_path / "run"
    pid = dead_pid()
    old = tmp_path / f"run.old-{pid}-0123abcd"  # killed between moving the old folder aside and the new one in
    before = old_run(old)
    (tmp_path / f"run.tmp-{pid}-89abcdef").mkdir()
    (tmp_path / f"run.tmp-{pid}-89abcdef" / "circuit.json").write_text("the new run, never moved in")
    unrelated = tmp_path / "run.tmp-notes"  # not a name run_folder makes
    unrelated.mkdir()
    with pytest.raises(RuntimeError), run_folder(out, replaces="circuit.json"):
        assert snapshot(out) == before
        raise RuntimeError
    assert snapshot(out) == before
    assert beside(out) == ["run.tmp-notes"]


def test_folders_are_swapped_in_one_step_where_the_system_can(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "from-a").write_text("a")
    (tmp_path / "b").mkdir()
    if not files._exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("no renameat2(RENAME_EXCHANGE) here; the rename-aside path is tested above")
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["from-a"] and not list((tmp_path / "a").iterdir())


# ------------------------------------------------------------------------------------ the lock


def test_a_live_lock_refuses_and_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "run"
    lock = write_lock(out, os.getpid())
    text = lock.read_text()
    with pytest.raises(OutputLockedError) as raised, run_folder(out):
        pytest.fail("the block ran under another run's lock")
    message = str(raised.value)
    assert f"process {os.getpid()}" in message and str(lock) in message and message.count(". ") == 0
    assert lock.read_text() == text and not out.exists() and beside(out) == ["run.lock"]


def test_a_lock_of_another_host_counts_as_live(tmp_path: Path) -> None:
    out = tmp_path / "run"
    write_lock(out, dead_pid(), host="elsewhere.invalid")
    with pytest.raises(OutputLockedError, match=r"elsewhere.invalid"), output_lock(out):
        pass


def test_a_stale_lock_is_taken_over_and_released(tmp_path: Path) -> None:
    out = tmp_path / "run"
    lock = write_lock(out, dead_pid())
    with output_lock(out) as held:
        assert held == lock
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_a_run_that_read_a_stale_lock_late_does_not_break_the_new_one(tmp_path: Path) -> None:
    out = tmp_path / "run"
    lock = write_lock(out, dead_pid())
    stale = lock.read_text()  # a second run reads the stale lock, then the first run takes it over
    with output_lock(out):
        locks._break_stale(lock, stale)  # ... and the second run, late, tries to break what it read
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(OutputLockedError), output_lock(out):
            pass
    assert not lock.exists() and beside(out) == []


def test_an_unreadable_lock_is_waited_for_then_abandoned(tmp_path: Path) -> None:
    out = tmp_path / "run"
    lock = lock_path(out)
    lock.write_text("")  # as if its process died right after creating it
    with pytest.raises(OutputLockedError), output_lock(out):
        pass
    old = time.time() - 60
    os.utime(lock, (old, old))
    with output_lock(out):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_the_cli_refuses_a_folder_another_run_is_writing_before_loading_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model: None
) -> None:
    out = tmp_path / "run"
    before = old_run(out)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = write_lock(out, sleeper.pid)
        started = time.perf_counter()
        assert main(["discover", "ioi", "--out", str(out), *FAST]) == 2
        assert time.perf_counter() - started < 5
        err = one_error_line(capsys)
        assert "being written by another run" in err and f"process {sleeper.pid}" in err
        assert lock.exists() and json.loads(lock.read_text())["pid"] == sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()
    assert snapshot(out) == before and beside(out) == ["run.lock"]


def test_the_cli_takes_over_a_stale_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    before = old_run(out)
    lock = write_lock(out, dead_pid())
    seen = []

    def load_setup(*args, **kwargs):
        seen.append(json.loads(lock.read_text())["pid"])  # the lock is held while the model loads
        raise CircuitError("stopped where the model would load")

    monkeypatch.setattr("circuits.app.pipeline.load_setup", load_setup)
    assert main(["discover", "ioi", "--out", str(out), *FAST]) == 2
    assert "stopped where the model would load" in one_error_line(capsys)
    assert seen == [os.getpid()]
    assert snapshot(out) == before and beside(out) == []


# ------------------------------------------------------------------------------------ early checks


def _read_only_parent(tmp_path: Path) -> Path:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the /proc case covers a place root cannot write")
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    return parent / "run"


def _system_folder(tmp_path: Path) -> Path:
    if not os.path.isdir("/proc") or (os.access("/proc", os.W_OK) and _can_mkdir("/proc/circuits-probe")):
        pytest.skip("no folder here that this user cannot write")
    return Path("/proc/circuits-run")


def _can_mkdir(path: str) -> bool:
    try:
        os.mkdir(path)
    except OSError:
        return False
    os.rmdir(path)
    return True


def _file(tmp_path: Path) -> Path:
    (tmp_path / "afile").write_text("x")
    return tmp_path / "afile"


CASES = {
    "empty": (lambda tmp: "", "is empty"),
    "blank": (lambda tmp: "  ", "is empty"),
    "a-file": (lambda tmp: _file(tmp), "is a file"),
    "under-a-file": (lambda tmp: _file(tmp) / "run", "lies under"),
    "read-only-parent": (_read_only_parent, "read-only"),
    "system-folder": (_system_folder, "cannot be written"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_discover_checks_out_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model: None, case: str
) -> None:
    make, words = CASES[case]
    out = str(make(tmp_path))
    cwd_before = sorted(os.listdir("."))
    assert main(["discover", "ioi", "--out", out, *FAST]) == 2
    err = one_error_line(capsys)
    assert words in err and (out in err or not out.strip())
    assert sorted(os.listdir(".")) == cwd_before  # `--out ""` wrote nothing into the current folder


def test_the_library_checks_out_before_the_model_loads(tmp_path: Path, no_model: None) -> None:
    from circuits.app.config import DataConfig, DiscoverConfig, ModelConfig
    from circuits.app.pipeline import discover

    for out in (_file(tmp_path), tmp_path / "afile" / "run", ""):
        with pytest.raises(OutputError):
            discover(DiscoverConfig(data=DataConfig(task="ioi"), model=ModelConfig(device="cpu")), out=out)


def test_a_folder_that_is_not_a_run_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_model: None
) -> None:
    other = tmp_path / "src"
    other.mkdir()
    (other / "main.py").write_text("print('mine')")
    assert main(["discover", "ioi", "--out", str(other), *FAST]) == 2
    assert "no circuit.json" in one_error_line(capsys)
    monkeypatch.chdir(other)
    for out in (".", str(tmp_path)):
        assert main(["discover", "ioi", "--out", out, *FAST]) == 2
        assert "current folder" in one_error_line(capsys)
    assert (other / "main.py").read_text() == "print('mine')" and beside(other) == []


def test_check_output_dir_accepts_new_empty_and_earlier_folders(tmp_path: Path) -> None:
    assert check_output_dir(tmp_path / "new" / "run", replaces="circuit.json") == tmp_path / "new" / "run"
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", replaces="circuit.json")
    old_run(tmp_path / "old")
    check_output_dir(tmp_path / "old", replaces="circuit.json")
    (tmp_path / "old" / "notes.txt").write_text("kept by writers that write into a folder")
    check_output_dir(tmp_path / "old")
    assert not (tmp_path / "new").exists()  # checking creates nothing


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda tmp: tmp, "is a folder"),
        (lambda tmp: f"{tmp}/task/", "is a folder"),
        (lambda tmp: _file(tmp) / "task.jsonl", "lies under"),
        (lambda tmp: "", "is empty"),
    ],
    ids=["existing-folder", "trailing-slash", "under-a-file", "empty"],
)
def test_tasks_export_checks_out(tmp_path: Path, capsys: pytest.CaptureFixture[str], make, words: str) -> None:
    out = str(make(tmp_path))
    assert main(["tasks", "export", "ioi", "--out", out, "-n", "4"]) == 2
    err = one_error_line(capsys)
    assert words in err and out.rstrip("/") in err
    assert not list(tmp_path.glob("*.jsonl")) and not list(tmp_path.glob("*.csv"))


def test_tasks_export_checks_the_schema_path_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t_schema.csv").mkdir()
    assert main(["tasks", "export", "ioi", "--out", str(tmp_path / "t.jsonl"), "-n", "4"]) == 2
    assert "t_schema.csv is a folder" in one_error_line(capsys)
    assert not (tmp_path / "t.jsonl").exists()


def test_check_output_file_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    if os.path.exists("/dev/null"):
        with pytest.raises(OutputError, match="not a regular file"):
            check_output_file("/dev/null", "--out")
    check_output_file(tmp_path / "new" / "x.jsonl")
    assert not (tmp_path / "new").exists()


def test_training_commands_check_out_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model: None
) -> None:
    afile = _file(tmp_path)
    assert main(["toy", "train", "--out", str(afile), "--steps", "1", "--quiet"]) == 2
    assert "is a file" in one_error_line(capsys)
    assert main(["toy", "train", "--out", str(afile / "model"), "--steps", "1", "--quiet"]) == 2
    assert "lies under" in one_error_line(capsys)
    assert main(["toy", "train", "--out", "", "--steps", "1", "--quiet"]) == 2
    assert "is empty" in one_error_line(capsys)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["dictionaries", "train", "--out", str(other), "--quiet", "--device", "cpu"]) == 2
    assert "no index.json" in one_error_line(capsys)
    assert main(["dictionaries", "train", "--out", str(afile), "--quiet", "--device", "cpu"]) == 2
    assert "is a file" in one_error_line(capsys)
    assert (other / "keep.txt").read_text() == "mine"


def test_a_keyboard_interrupt_in_any_command_is_one_line_and_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("circuits.data.splits.make_task", interrupted)
    assert main(["tasks", "show", "ioi"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "interrupted\n" and captured.out == ""


def test_main_restores_the_sigterm_handler(capsys: pytest.CaptureFixture[str]) -> None:
    before = signal.getsignal(signal.SIGTERM)
    assert main(["tasks", "list"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


# ------------------------------------------------------------------------------------ whole runs


def test_discover_replaces_an_earlier_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    before = old_run(out)
    (out / "notes.txt").write_text("of the earlier run")
    assert main(["discover", "ioi", "--out", str(out), *FAST, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(summary["files"])  # notes.txt went with the earlier run
    assert {"circuit.json", "curve.json", "curve.png", "report.html"} <= set(written)
    after = snapshot(out)
    assert all(after[name] != before[name] for name in written)
    assert json.loads((out / "circuit.json").read_text())["nodes"]
    assert summary["files"] == {name: str(out / name) for name in written}
    assert beside(out) == []


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_run_interrupted_while_writing_leaves_the_earlier_run(tmp_path: Path, sig: str) -> None:
    out = tmp_path / "run"
    before = old_run(out)
    proc = subprocess.Popen(
        [sys.executable, "-m", "circuits.app.cli", "discover", "ioi", "--out", str(out), *FAST],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob("run.tmp-*/circuit.json")):  # the run is writing its folder
            if proc.poll() is not None:
                pytest.fail(f"the run ended before writing: {proc.communicate()}")
            if time.monotonic() > deadline:
                pytest.fail("the run never started writing")
            time.sleep(0.005)
        proc.send_signal(getattr(signal, sig))
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert stderr == f"interrupted: {out} was left as it was\n"
    assert stdout == ""
    assert snapshot(out) == before
    assert beside(out) == []
