"""Faults during a run, injected for real on the tiny GPT-2: out of memory in a cell, a full
disk under results.jsonl, Ctrl-C and SIGKILL of the main process, two runs on one directory,
a timeout too large for a queue wait (1e300 s), and (with CUDA) a real
``torch.cuda.OutOfMemoryError``.

A killed worker and a hanging cell are tested in tests/execution/test_matrix_runner.py. Every test
ends by checking that no finished record was lost and none was duplicated.

The engine doubles below are loaded into the workers through ``HARNESS_ENGINES``
(``gpt=tests.execution.test_faults:SlowTextEngine``), so this module keeps its imports light.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import print_through_capture
from harness.engines.textgen import TextgenEngine
from tests.execution.test_matrix_runner import mini_matrix

ROOT = Path(__file__).parent.parent.parent
DOUBLE_ENV = {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
FAULTS_INJECTED = Counter()


class SlowTextEngine(TextgenEngine):
    """The real text engine, a little slower per cell. With ``HARNESS_TEST_HOLD=<file>:<n>``
    its worker runs n cells, then holds the next one until <file> exists (at most 120 s), so
    a test acts at a known point of the run instead of racing it."""

    cells_run = 0  # per worker process (an engine object is made per cell)

    def run(self, loaded, task, device, neighbours=(), seeded=False):
        time.sleep(float(os.environ.get("HARNESS_TEST_CELL_DELAY_S", "0.2")))
        path, _, after = os.environ.get("HARNESS_TEST_HOLD", "").rpartition(":")
        if path and SlowTextEngine.cells_run >= int(after):
            deadline = time.monotonic() + 120
            while not os.path.exists(path) and time.monotonic() < deadline:
                time.sleep(0.02)
        SlowTextEngine.cells_run += 1
        return super().run(loaded, task, device, neighbours, seeded=seeded)


def _slow(hold: Path | None = None, after: int = 0) -> dict:
    env = {"HARNESS_ENGINES": "gpt=tests.execution.test_faults:SlowTextEngine", **DOUBLE_ENV}
    return {**env, "HARNESS_TEST_HOLD": f"{hold}:{after}"} if hold else env


class CudaOOMTextEngine(TextgenEngine):
    """The real text engine, except that the seed-2 cell asks the GPU for twice its memory."""

    def run(self, loaded, task, device, neighbours=(), seeded=False):
        if task.seed == 2:
            import torch

            total = torch.cuda.get_device_properties(torch.device(device)).total_memory
            torch.empty(2 * total, dtype=torch.uint8, device=device)
        return super().run(loaded, task, device, neighbours, seeded=seeded)


def _records(run_dir: Path) -> list[dict]:
    """Every line of results.jsonl, each required to be a whole JSON record."""
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _assert_complete(run_dir: Path, cells: int) -> list[dict]:
    """Every cell exactly one ok record; nothing torn, nothing duplicated."""
    records = _records(run_dir)
    ok = Counter(r["cell_id"] for r in records if r["status"] == "ok")
    assert len(ok) == cells and set(ok.values()) == {1}, ok
    assert not (run_dir / "results.torn.jsonl").exists()
    for r in records:
        if r["status"] == "ok":
            assert (run_dir / r["artifact"]).is_file()
    return records


def _start(matrix: Path, run_dir: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """``harness run`` in a fresh process of its own process group, as a user's shell starts it."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(matrix),
            "--out",
            str(run_dir),
            "--no-progress",
            "--formats",
            "json",
            *extra,
        ],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for_lines(proc: subprocess.Popen, results: Path, n: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if results.exists():
            count = results.read_bytes().count(b"\n")
            if count >= n:
                return count
        if proc.poll() is not None:
            raise AssertionError(f"run ended early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"fewer than {n} records after {timeout} s")


def _workers_of(run_dir: Path) -> list[int]:
    """Live (not zombie) ``harness.execution.worker`` processes serving this run (its job file is in run_dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (
            b"harness.execution.worker" in cmdline
            and any(str(run_dir).encode() in part for part in cmdline)
            and state != "Z"
        ):
            found.append(int(proc.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module", autouse=True)
def _report_faults(request):
    yield
    line = f"faults injected into real runs: {sum(FAULTS_INJECTED.values())} ({dict(sorted(FAULTS_INJECTED.items()))})"
    print_through_capture(request, line)


@pytest.mark.slow
def test_out_of_memory_in_a_cell_is_recorded_and_the_worker_goes_on(cli, tmp_path, tiny_gpt2):
    """HARNESS_FAULT=oom caps the worker's address space (RLIMIT_AS) and allocates past it:
    the cell is recorded failed with "out of memory", the same worker runs the next cells.
    The matrix also sets the largest timeout_s allowed (a day): a long deadline, not an OverflowError."""
    matrix = mini_matrix(tmp_path, workers=1, repeats=1, timeout_s=86_400, axes={"seed": [1, 2, 3], "threads": [1]})
    FAULTS_INJECTED["out of memory (RLIMIT_AS)"] += 1
    res = cli(
        "run",
        str(matrix),
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
        "--formats",
        "json",
        env={"HARNESS_FAULT": "oom:gpt/*/seed2/*"},
        timeout=120,
    )
    assert "Traceback" not in res.stderr and "OverflowError" not in res.stderr, res.stderr
    records = {r["cell_id"].split("/")[3]: r for r in _records(tmp_path / "run")}
    assert {k: r["status"] for k, r in records.items()} == {"seed1": "ok", "seed2": "failed", "seed3": "ok"}
    assert records["seed2"]["reason"].startswith("out of memory"), records["seed2"]["reason"]
    assert "can't allocate memory" in records["seed2"]["reason"]  # torch's own allocator refused
    assert records["seed1"]["worker_pid"] == records["seed2"]["worker_pid"] == records["seed3"]["worker_pid"]
    assert res.returncode == 1 and "out of memory" in res.stderr  # a failed cell fails the gate, by name


def _mount_small_tmpfs(path: Path) -> bool:
    """A real filesystem that can fill up (root in a container may mount tmpfs)."""
    try:
        return (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(path)], capture_output=True, timeout=10
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


def _fill(folder: Path) -> None:
    """Write zeros until not one byte more fits."""
    import errno

    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        size = 1 << 20
        while size:
            try:
                os.write(fd, b"\0" * size)
            except OSError as err:
                assert err.errno == errno.ENOSPC
                size //= 2
    finally:
        os.close(fd)


@pytest.mark.slow
def test_disk_full_stops_with_one_line_then_resume_completes(cli, tmp_path, tiny_gpt2):
    """The run directory is a small tmpfs, filled to the last byte while the run writes:
    every later write fails with ENOSPC, as on a full disk. (This test used to swap
    results.jsonl for a symlink to /dev/full; run directories no longer follow links.)"""
    matrix = mini_matrix(tmp_path, workers=1, repeats=2, axes={"seed": [1, 2, 3], "threads": [1]})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if not _mount_small_tmpfs(run_dir):
        pytest.skip("needs permission to mount a small tmpfs (a disk that can really fill up)")
    try:
        results = run_dir / "results.jsonl"
        release = tmp_path / "release"
        proc = _start(matrix, run_dir, env=_slow(release, after=2))  # the third cell waits for the fill
        _wait_for_lines(proc, results, 2)
        _fill(run_dir)
        FAULTS_INJECTED["disk full (ENOSPC)"] += 1
        release.touch()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, err
        assert "Traceback" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), err
        assert "disk full" in lines[0] and "finished records are kept" in lines[0] and "--resume" in lines[0]
        assert _workers_of(run_dir) == []
        written = [json.loads(x) for x in results.read_bytes().split(b"\n")[:2]]
        assert len(written) == 2 and all(r["status"] == "ok" for r in written)
        (run_dir / "filler").unlink()  # space is free again
        res = cli("run", str(matrix), "--out", str(run_dir), "--no-progress", "--resume", "--formats", "json")
        assert res.returncode == 0, res.stderr
        assert "already done" in res.stdout
        records = _assert_complete(run_dir, 6)
        assert records[: len(written)] == written  # the records kept are the records written, untouched
    finally:
        subprocess.run(["umount", "-l", str(run_dir)], capture_output=True, timeout=30)


def _records_from(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_ctrl_c_keeps_records_leaves_no_worker_and_resume_completes(cli, tmp_path, tiny_gpt2):
    matrix = mini_matrix(tmp_path, workers=2, repeats=1, axes={"seed": [1, 2, 3], "threads": [1]})
    run_dir = tmp_path / "run"
    proc = _start(matrix, run_dir, env=_slow(tmp_path / "never", after=2))  # the third cell is in flight
    _wait_for_lines(proc, run_dir / "results.jsonl", 2)
    workers_before = _workers_of(run_dir)
    assert workers_before
    os.kill(proc.pid, signal.SIGINT)  # Ctrl-C reaches the main process (the worker has its own session)
    FAULTS_INJECTED["SIGINT of the main process"] += 1
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err and "--resume" in err
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "interrupted"
    written = _records(run_dir)
    assert len(written) == 2 and all(r["status"] == "ok" for r in written)
    pids = {r["worker_pid"] for r in written} | set(workers_before)
    survivors = [pid for pid in pids if _alive(pid)]
    for pid in survivors:  # started by this test: never left behind
        os.kill(pid, signal.SIGKILL)
    assert pids and not survivors, "a worker outlived the interrupted run"
    assert _workers_of(run_dir) == [] and not list(run_dir.glob("job-*.json"))
    res = cli("run", str(matrix), "--out", str(run_dir), "--no-progress", "--resume", "--formats", "json")
    assert res.returncode == 0, res.stderr
    assert f"{6 - len(written)} executed, {len(written)} already done" in res.stdout
    records = _assert_complete(run_dir, 6)
    assert records[: len(written)] == written
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_sigkill_of_the_main_process_takes_its_worker_with_it(tmp_path, tiny_gpt2):
    """No handler runs on SIGKILL; the kernel ends the worker (PR_SET_PDEATHSIG) so nothing
    keeps writing into a run that is not being recorded. What was written stays valid."""
    matrix = mini_matrix(tmp_path, workers=1, repeats=2, axes={"seed": [1, 2, 3], "threads": [1]})
    run_dir = tmp_path / "run"
    proc = _start(matrix, run_dir, env=_slow(tmp_path / "never", after=1))  # the worker holds a cell (120 s)
    _wait_for_lines(proc, run_dir / "results.jsonl", 1)
    workers = _workers_of(run_dir)
    assert workers, "no worker found for the run"
    os.kill(proc.pid, signal.SIGKILL)
    FAULTS_INJECTED["SIGKILL of the main process"] += 1
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphans = [pid for pid in workers if _alive(pid)]
    for pid in orphans:  # this test started them: do not leave them behind when it fails
        os.kill(pid, signal.SIGKILL)
    assert not orphans, "the worker outlived its killed parent"
    assert all(r["status"] == "ok" for r in _records(run_dir))  # every line whole
    # the manifest still says running; nobody holds the lock: report calls it interrupted and gates fail
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "running"
    from conftest import run_cli

    res = run_cli("report", str(run_dir), "--gate", "--formats", "json")
    assert res.returncode == 1 and "'interrupted'" in res.stderr, res.stderr
    assert json.loads((run_dir / "report.json").read_text())["evidence"]["status"] == "interrupted"
    res = run_cli("run", str(matrix), "--out", str(run_dir), "--no-progress", "--resume", "--formats", "json")
    assert res.returncode == 0 and "the run was interrupted" in res.stderr, res.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "signals",
    [(signal.SIGTERM,), (signal.SIGHUP,), (signal.SIGINT, signal.SIGINT)],
    ids=["SIGTERM", "SIGHUP", "two quick Ctrl-C"],
)
def test_termination_signals_end_a_run_like_ctrl_c(tmp_path, tiny_gpt2, signals):
    """SIGTERM/SIGHUP left status ``running`` and job files behind; two quick Ctrl-C exited -2."""
    matrix = mini_matrix(tmp_path, workers=1, repeats=1, axes={"seed": [1, 2, 3], "threads": [1]})
    run_dir = tmp_path / "run"
    proc = _start(matrix, run_dir, env=_slow(tmp_path / "never", after=1))
    _wait_for_lines(proc, run_dir / "results.jsonl", 1)
    workers = _workers_of(run_dir)
    for sig in signals:
        os.kill(proc.pid, sig)
        FAULTS_INJECTED[f"{signal.Signals(sig).name} of the main process"] += 1
    _, err = proc.communicate(timeout=60)
    survivors = [pid for pid in workers if _alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "interrupted"
    assert not list(run_dir.glob("job-*.json")) and not survivors


@pytest.mark.slow
def test_two_runs_on_one_directory_the_second_is_refused(cli, tmp_path, tiny_gpt2):
    matrix = mini_matrix(tmp_path, workers=1, repeats=2, axes={"seed": [1, 2], "threads": [1]})
    run_dir = tmp_path / "run"
    release = tmp_path / "release"
    first = _start(matrix, run_dir, env=_slow(release, after=1))  # holds its second cell until released
    _wait_for_lines(first, run_dir / "results.jsonl", 1)
    FAULTS_INJECTED["second writer on one run directory"] += 2
    for extra in ([], ["--resume"]):  # a fresh run and a resume, both while the first one writes
        second = cli("run", str(matrix), "--out", str(run_dir), "--no-progress", "--formats", "json", *extra)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in second.stderr
        assert ("use --resume" if not extra else "another harness process is writing this run") in lines[0]
    assert first.poll() is None, "the first run was harmed"
    release.touch()
    _out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    _assert_complete(run_dir, 4)
    assert len(_records(run_dir)) == 4


def test_a_second_fresh_run_is_refused_by_the_lock_before_any_record(cli, tmp_path):
    """The window before the first record: the directory holds a manifest and the lock only."""
    from harness.store.run import RunStore

    holder = RunStore.create(tmp_path / "run", {"run_id": "first"})
    FAULTS_INJECTED["second writer on one run directory"] += 1
    res = cli("run", str(mini_matrix(tmp_path)), "--out", str(tmp_path / "run"), "--no-progress")
    assert_one_line_error(res, "another harness process is writing this run")
    assert not (tmp_path / "run" / "results.jsonl").exists()
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["run_id"] == "first"
    holder.unlock()


def assert_one_line_error(res, text: str) -> None:
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], res.stderr


@pytest.mark.gpu
@pytest.mark.slow
def test_cuda_out_of_memory_is_recorded_and_the_worker_goes_on(cli, tmp_path, tiny_gpt2):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    matrix = mini_matrix(tmp_path, workers=1, repeats=1, axes={"seed": [1, 2, 3], "threads": [1], "device": ["cuda:0"]})
    FAULTS_INJECTED["CUDA out of memory"] += 1
    res = cli(
        "run",
        str(matrix),
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
        "--formats",
        "json",
        env={"HARNESS_ENGINES": "gpt=tests.execution.test_faults:CudaOOMTextEngine", **DOUBLE_ENV},
    )
    records = {r["cell_id"].split("/")[3]: r for r in _records(tmp_path / "run")}
    assert {k: r["status"] for k, r in records.items()} == {"seed1": "ok", "seed2": "failed", "seed3": "ok"}, res.stderr
    assert records["seed2"]["reason"].startswith("CUDA out of memory"), records["seed2"]["reason"]
    assert records["seed1"]["worker_pid"] == records["seed3"]["worker_pid"]  # the worker went on
    assert res.returncode == 1 and "Traceback" not in res.stderr
