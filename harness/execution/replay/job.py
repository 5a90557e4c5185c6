"""Replay as a worker job: ``replay_elsewhere`` hands it to an executor, ``perform`` runs it
in the worker (harness.execution.worker), under the job's kernel level and thread count.

Why a job of the executors: replaying under another CPU kernel set needs a fresh process (the
level is set before torch starts); the executors already start, time out, stop and (on Ray)
place such processes, so replay has no worker loop of its own.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from harness.determinism import torch_threads
from harness.engines.draws import NotReplayable
from harness.execution.replay.output import replay_output
from harness.execution.replay.trace import Candidate, Options, StepDetail
from harness.outputs import npz_arrays, npz_bytes

#: the step-detail fields, as ``{field}_{stage}_{step}`` arrays in the job's artifact
_DETAIL_FIELDS = ("candidate", "sampled", "valid", "scores", "kept", "log_draws")


def replay_elsewhere(
    kind: str,
    task_doc: dict[str, Any],
    candidate: Candidate,
    *,
    isa: str = "native",
    threads: int | None = None,
    options: Options | None = None,
    timeout: float = 600,
    executor: Any = None,
) -> dict[str, Any]:
    """``replay_output`` in a fresh worker at CPU kernel level ``isa`` (and ``threads``), run
    by ``executor`` (the local one by default): ``{"trace": summary | None, "not_replayable":
    reason | None, "details": {(stage, step): StepDetail}}``. A worker that fails, times out
    or refuses the level is a RuntimeError naming why."""
    from harness.execution.protocol import ReplayWork
    from harness.execution.work import run_work, work_payload

    opts = options or Options()
    work = ReplayWork(
        candidate=base64.b64encode(npz_bytes(candidate.arrays)),  # Base64Bytes: validated from base64, held raw
        response=candidate.response,
        start=opts.start,
        path=opts.path,
        rows_in_draw_factor=opts.rows_in_draw_factor,
        detail_steps=list(opts.detail_steps),
        recheck_band=opts.recheck_band,
        allow_greedy=opts.allow_greedy,
    )
    payload = work_payload("replay", kind, task_doc, work, threads=threads, isa=isa)
    outcome = run_work([payload], executor=executor, timeout_s=timeout)["replay"]
    if outcome.status != "ok":
        raise RuntimeError(f"replay worker (isa {isa}) {outcome.status}: {outcome.reason}")
    out = dict(outcome.output["replay"])
    out["details"] = _details(outcome.arrays)
    return out


def perform(cell: Any, task: Any, cache: Any, store: Any) -> dict[str, Any]:
    """In the worker: the replay the cell's ``work`` asks for; the record's fields (the trace
    summary in ``output``, the step details as its artifact)."""

    work = cell.work
    arrays = npz_arrays(work.candidate)
    opts = Options(
        start=work.start,
        path=work.path,
        rows_in_draw_factor=work.rows_in_draw_factor,
        detail_steps=tuple(work.detail_steps),
        recheck_band=tuple(work.recheck_band) if work.recheck_band else None,
        allow_greedy=work.allow_greedy,
    )
    details: dict[str, np.ndarray] = {}
    try:
        with torch_threads(cell.axes.threads):
            trace = replay_output(
                cell.kind,
                task,
                Candidate(arrays=arrays, response=work.response),
                device=cell.axes.device,
                cache=cache,
                options=opts,
            )
        result: dict[str, Any] = {"trace": trace.summary(), "not_replayable": None}
        for stage in trace.stages:
            for step, d in stage.details.items():
                for name in _DETAIL_FIELDS:
                    value = getattr(d, name)
                    if value is not None:
                        details[f"{name}_{stage.stage}_{step}"] = np.asarray(value)
    except NotReplayable as err:
        result = {"trace": None, "not_replayable": str(err)}
    artifact = store.write_artifact(cell.artifact_name, details) if details else None
    return {"status": "ok", "output": {"replay": result}, "artifact": artifact}


def _details(arrays: dict[str, np.ndarray]) -> dict[tuple[str, int], StepDetail]:
    """The step details a replay job's artifact holds, by (stage, step)."""
    out: dict[tuple[str, int], StepDetail] = {}
    for name in arrays:
        if not name.startswith("scores_"):
            continue
        _, stage, step = name.split("_")
        key = f"{stage}_{step}"
        out[(stage, int(step))] = StepDetail(
            step=int(step),
            candidate=arrays[f"candidate_{key}"],
            sampled=arrays[f"sampled_{key}"],
            valid=arrays[f"valid_{key}"],
            scores=arrays[name],
            kept=arrays[f"kept_{key}"],
            log_draws=arrays.get(f"log_draws_{key}"),
        )
    return out
