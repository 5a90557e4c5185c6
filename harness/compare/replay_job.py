"""The replay rule's decision as a job of the executors: ``validate_elsewhere`` hands it to an
executor (``harness replay``), ``perform`` decides in the worker.

Why in a worker: a decision replays the candidate from every start a node may have had, which
loads the model (a cold start seeds and loads it again); in a worker of the executors that
runs under their timeout, on any node of a fleet, in a process whose determinism environment
was set before torch started, as every other model execution does.
"""

from __future__ import annotations

import base64
from typing import Any

from harness.compare.replay import ReplayDecision, validate
from harness.errors import HarnessError
from harness.execution.replay import Candidate
from harness.outputs import npz_arrays, npz_bytes
from harness.spec.policy import Thresholds


class ValidateFailed(HarnessError, RuntimeError):
    """The worker that was to decide ended without a decision (timeout, crash, refusal)."""


def validate_elsewhere(
    kind: str,
    task_doc: dict[str, Any],
    candidate: Candidate,
    thresholds: Thresholds | None = None,
    *,
    ran_on: str | None = None,
    batch_size: int = 1,
    starts: tuple[str, ...] = ("warm", "cold"),
    path: str = "auto",
    executor: Any = None,
    timeout_s: float = 3600,
) -> ReplayDecision:
    """``validate`` in a worker of ``executor`` (the local one by default)."""
    from harness.execution.protocol import ValidateWork
    from harness.execution.work import run_work, work_payload

    work = ValidateWork(
        candidate=base64.b64encode(npz_bytes(candidate.arrays)),
        response=candidate.response,
        thresholds=(thresholds or Thresholds()).model_dump(mode="json"),
        ran_on=ran_on,
        batch_size=batch_size,
        starts=list(starts),
        path=path,
    )
    outcome = run_work([work_payload("validate", kind, task_doc, work)], executor=executor, timeout_s=timeout_s)[
        "validate"
    ]
    if outcome.status != "ok":
        raise ValidateFailed(f"the replay worker ended without a decision ({outcome.status}: {outcome.reason})")
    return ReplayDecision.model_validate(outcome.output["decision"])


def perform(cell: Any, task: Any, cache: Any, store: Any) -> dict[str, Any]:
    """In the worker: the decision the cell's ``work`` asks for, in the record's output."""
    work = cell.work
    arrays = npz_arrays(work.candidate)
    decision = validate(
        cell.kind,
        task,
        Candidate(arrays=arrays, response=work.response),
        Thresholds.model_validate(work.thresholds),
        device=cell.axes.device,
        ran_on=work.ran_on,
        batch_size=work.batch_size,
        cache=cache,
        starts=tuple(work.starts),
        path=work.path,
    )
    return {"status": "ok", "output": {"decision": decision.model_dump(mode="json")}}
