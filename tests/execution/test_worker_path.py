"""One worker path (issue 27 item 3): every model execution is a job of the executors.

Pinned here: only the executors start worker processes (no module keeps a private loop of
its own); a replay under another kernel level and a locate re-run are jobs an executor is
handed (a registered recording executor sees them) and give what the same work gives in this
process; a kind names its replayer on its KindSpec, and a reference that names nothing is one
line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from harness.execution.executors import EXECUTORS, make_executor
from harness.execution.local import LocalProcessExecutor
from harness.execution.protocol import LocateWork, ReplayWork, ValidateWork
from harness.spec.kinds import KINDS, KindSpec, ReplayerMismatch

ROOT = Path(__file__).resolve().parents[2] / "harness"
#: the modules that start worker processes: the executors, nothing else
WORKER_STARTERS = {"harness/execution/local.py", "harness/execution/ray_executor.py"}
#: modules that run an external tool (not a worker): what they run
TOOL_RUNNERS = {
    "harness/execution/env.py": "nvidia-smi (the driver version)",
    "harness/workflows/whitelist.py": "nvidia-smi (the GPU table)",
    "harness/workflows/gpu_proof.py": "nvidia-smi (the GPU proof)",
    "harness/execution/stacks.py": "pip (a stack's overlay) and a stack's interpreter, probed for its harness code",
}
PROCESS_CALLS = {"Popen", "run", "call", "check_call", "check_output", "fork", "spawnv", "system", "execv"}


def process_starts(source: str) -> list[str]:
    """What a module calls that starts a process: ``subprocess.*`` and ``os.*`` calls, any
    ``multiprocessing`` or ``concurrent.futures.ProcessPoolExecutor`` use."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            found += [f"import {n}" for n in names if n and ("multiprocessing" in n or n == "ProcessPoolExecutor")]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in PROCESS_CALLS:
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id in ("subprocess", "os"):
                found.append(f"{owner.id}.{node.func.attr}")
    return found


def test_only_the_executors_start_worker_processes():
    starters = {}
    for path in sorted(ROOT.rglob("*.py")):
        calls = process_starts(path.read_text())
        if calls:
            starters[str(path.relative_to(ROOT.parent))] = calls
    unexpected = set(starters) - WORKER_STARTERS - set(TOOL_RUNNERS)
    assert not unexpected, f"modules that start processes outside the executors: {unexpected}"
    assert set(starters) >= WORKER_STARTERS  # the scan finds what it looks for
    assert "harness/execution/replay.py" not in starters and not (ROOT / "execution" / "replay.py").exists()


def test_the_scan_catches_what_it_looks_for():
    assert process_starts("import subprocess\nsubprocess.Popen(['x'])") == ["subprocess.Popen"]
    assert process_starts("import multiprocessing") == ["import multiprocessing"]
    assert process_starts("from concurrent.futures import ProcessPoolExecutor") == ["import ProcessPoolExecutor"]
    assert process_starts("import os\nos.fork()") == ["os.fork"]
    assert process_starts("x.run()") == []


# --- the kinds name their replayers ---------------------------------------------------------------


def test_every_kind_with_tokens_names_a_replayer_and_audioldm_none():
    from harness.execution.replay import replay_support

    for name in KINDS.names():
        spec = KINDS.get(name)
        replayer = KINDS.replayer(name)
        assert (replayer is None) == (spec.discrete is None), name  # a replayer checks a discrete output
        if replayer is not None:
            assert [array for _, array in replayer.stages][-1] == spec.discrete
    why = replay_support("audioldm", None)
    assert why is not None and "audio, gpt, chain" in why and "audioldm" in why


@pytest.fixture
def odd_kind():
    spec = KINDS.get("gpt")
    made = []

    def register(replayer: str) -> str:
        name = f"odd{len(made)}"
        KINDS.add(KindSpec(**{**spec.model_dump(), "name": name, "recognised_by": (), "replayer": replayer}))
        made.append(name)
        return name

    yield register
    for name in made:
        KINDS.unregister(name)


@pytest.mark.parametrize(
    "ref,says",
    [
        ("harness.execution.replay.text:NOPE", "cannot load it (AttributeError"),
        ("harness.nowhere:X", "cannot load it (ModuleNotFoundError"),
        ("no-colon", "is not a 'module:object' reference"),
        ("harness.execution.replay.text:text_stage", "is not a replayer"),
    ],
)
def test_a_replayer_that_names_nothing_is_one_line(odd_kind, ref, says):
    from harness.engines.draws import NotReplayable
    from harness.execution.replay import Candidate, replay_output

    name = odd_kind(ref)
    with pytest.raises(ReplayerMismatch) as err:
        KINDS.replayer(name)
    text = str(err.value)
    assert "\n" not in text and says in text and ref in text and repr(name) in text
    with pytest.raises((ReplayerMismatch, NotReplayable)):
        replay_output(name, None, Candidate(arrays={}))


# --- replay and locate are jobs of the executors -------------------------------------------------

GPT = {
    "model": "tiny:gpt2",
    "messages": [{"role": "user", "content": "hello world"}],
    "seed": 1,
    "generation_config": {"max_new_tokens": 6, "do_sample": True, "top_k": 20, "top_p": 1.0},
}


class Recording(LocalProcessExecutor):
    """The local executor, keeping every job it is handed and every worker's environment."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list = []
        self.ready: list = []

    def run(self, job, on_record, on_ready):
        self.jobs.append(job)

        def ready(event):
            self.ready.append(event)
            on_ready(event)

        super().run(job, on_record, ready)


@pytest.fixture
def recording():
    EXECUTORS.register("recording", Recording)
    yield make_executor("recording")
    EXECUTORS.unregister("recording")


@pytest.mark.slow
def test_a_replay_under_another_kernel_level_is_a_job_of_the_executor(tiny_gpt2, recording):
    from harness.engines.base import ModelCache
    from harness.execution.execute import execute
    from harness.execution.replay import Candidate, Options, replay_elsewhere, replay_output
    from harness.isa import LEVELS, unavailable
    from harness.spec.tasks import parse_task

    if unavailable("avx2"):
        pytest.skip(unavailable("avx2"))
    task = parse_task(GPT, "gpt")
    ex = execute(task, "gpt", "cpu", ModelCache(), threads=1)
    candidate = Candidate(arrays=ex.output.arrays, response=ex.output.response)
    opts = Options(path="stepwise", detail_steps=(0, 2))
    there = replay_elsewhere("gpt", GPT, candidate, isa="avx2", threads=1, options=opts, executor=recording)
    (job,) = recording.jobs
    (cell,) = job.cells
    assert job.isa == "avx2" and cell.axes.threads == 1 and isinstance(cell.work, ReplayWork)
    (ready,) = recording.ready
    assert str(ready.environment["kernels"]["aten"]).upper() == LEVELS["avx2"].aten.upper()  # it ran there
    here = replay_output("gpt", task, candidate, options=opts)
    assert there["not_replayable"] is None and there["trace"]["stages"][0]["flips"] == 0
    assert there["trace"]["stages"][0]["steps"] == here.stages[0].steps
    assert sorted(there["details"]) == [("text", 0), ("text", 2)]
    for step in (0, 2):
        a, b = there["details"][("text", step)], here.stages[0].details[step]
        assert (a.sampled == b.sampled).all() and a.scores.shape == b.scores.shape
    # harness replay's decision is a job too (every start tried in the worker)
    from harness.compare.replay import validate
    from harness.compare.replay_job import validate_elsewhere

    decision = validate_elsewhere("gpt", GPT, candidate, executor=recording)
    assert isinstance(recording.jobs[-1].cells[0].work, ValidateWork)
    assert decision == validate("gpt", task, candidate).model_copy(update={"seconds": decision.seconds})
    assert decision.accepted is True


@pytest.mark.slow
def test_a_locate_re_run_in_workers_finds_what_it_finds_in_this_process(tiny_gpt2, recording):
    from harness.workflows.locate import locate_docs, locate_in_workers, rerun_traced

    _, digests = rerun_traced(GPT, "gpt", threads=1, step=2)
    sides = ({"doc": GPT, "threads": 1}, {"doc": GPT, "threads": 2})
    here = locate_docs("gpt", *sides, 2, (digests, None))
    there = locate_in_workers("gpt", *sides, 2, (digests, None), executor=recording)
    (job,) = recording.jobs  # both sides: one worker, two locate jobs
    assert [type(c.work) for c in job.cells] == [LocateWork, LocateWork]
    assert [c.axes.threads for c in job.cells] == [1, 2]
    assert there == here
