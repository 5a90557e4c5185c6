"""``harness locate RUN --pair A B``: re-execute two cells of a run with module hooks and name
the first module whose output differs (harness.execution.hooks hooks, harness.compare.locate
compares).

Each side is run once, as a locate job of the executors (harness.execution.work: a fresh
worker, with the cell's own task document, kernel level, thread count and profile, on the
local executor or Ray); its output digest must equal the recorded one, else the location is
refused as unsound (the divergence did not reproduce: e.g. it happened only in another
process). ``locate_docs`` re-runs both sides in this process instead (a planted change, a
test). The step examined is the pair's
first divergent step; when the discrete outputs are equal (a float-only difference) it is
step 0. The modules outside the steps (text encoder, audio decoder) are always examined.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from harness.compare.locate import Hooks, LocateError, Location, first_difference, operation_hint
from harness.execution.hooks import rerun_traced

if TYPE_CHECKING:
    from harness.spec.cell import Cell
    from harness.store.records import Record
    from harness.store.run import RunStore

__all__ = ["LocateResult", "explain_pair", "locate_docs", "locate_in_workers", "locate_run_pair", "rerun_traced"]


class LocateResult(BaseModel):
    cell_a: str
    cell_b: str
    kind: str
    differs: str  # what the two cells differ in (axes)
    step: int
    location: Location
    sentence: str
    #: the first divergent step explained (harness.compare.replay.Explanation dump): benign or
    #: suspicious, each side's gap; None where the discrete outputs are equal or cannot be replayed
    explanation: dict[str, Any] | None = None


def locate_docs(
    kind: str,
    side_a: dict[str, Any],
    side_b: dict[str, Any],
    step: int,
    expected: tuple[dict[str, str] | None, dict[str, str] | None] = (None, None),
) -> Location:
    """Both sides re-run at ``step`` (``side_*``: keyword arguments of rerun_traced with
    ``doc``); refused when a re-run's output differs from its ``expected`` digests."""
    traces = []
    for label, side, want in (("A", side_a, expected[0]), ("B", side_b, expected[1])):
        trace, digests = rerun_traced(kind=kind, step=step, **side)
        _check_reproduced(label, digests, want)
        traces.append(trace)
    return first_difference(traces[0], traces[1])


def locate_in_workers(
    kind: str,
    side_a: dict[str, Any],
    side_b: dict[str, Any],
    step: int,
    expected: tuple[dict[str, str] | None, dict[str, str] | None] = (None, None),
    *,
    executor: Any = None,
    timeout_s: float = 600,
) -> Location:
    """``locate_docs`` with each side a locate job of ``executor`` (the local one by default):
    ``side_*`` hold ``doc`` and optionally ``device``, ``threads``, ``profile``, ``isa``."""
    from harness.execution.hooks import trace_of
    from harness.execution.protocol import LocateWork
    from harness.execution.work import run_work, work_payload

    payloads = [
        work_payload(
            f"locate-{label}",
            kind,
            side["doc"],
            LocateWork(step=step),
            device=side.get("device", "cpu"),
            threads=side.get("threads"),
            isa=side.get("isa", "native"),
            profile=side.get("profile", "on"),
        )
        for label, side in (("A", side_a), ("B", side_b))
    ]
    outcomes = run_work(payloads, executor=executor, timeout_s=timeout_s)
    traces = []
    for label, payload, want in (("A", payloads[0], expected[0]), ("B", payloads[1], expected[1])):
        outcome = outcomes[payload.cell_id]
        if outcome.status != "ok":
            raise LocateError(f"side {label}: the re-run did not complete ({outcome.status}: {outcome.reason})")
        _check_reproduced(label, outcome.digests, want)
        traces.append(trace_of(outcome.output, outcome.arrays))
    return first_difference(traces[0], traces[1])


def _check_reproduced(label: str, digests: dict[str, str], want: dict[str, str] | None) -> None:
    if want is not None and (
        digests.get("output") != want.get("output") or digests.get("tokens") != want.get("tokens")
    ):
        raise LocateError(
            f"side {label}: the re-run's output differs from the recorded one; the divergence "
            f"does not reproduce here, so it cannot be located soundly"
        )


def _cells(run_dir: Path) -> tuple[RunStore, dict[str, Record], dict[str, Cell]]:
    from harness.spec.matrix import expand
    from harness.store.run import RunStore
    from harness.workflows.certify import reference_matrix

    store = RunStore(run_dir)
    manifest = store.manifest()
    records = {r.cell_id: r for r in store.load_records().records}
    cells = {
        c.cell_id: c
        for c in expand(
            reference_matrix(manifest, str(run_dir)),
            [str(d) for d in manifest.devices or ["cpu"]],
            max_cells=max(20000, len(records)),
        )
    }
    return store, records, cells


def locate_run_pair(run_dir: str | Path, cell_a: str, cell_b: str, *, executor: Any = None) -> LocateResult:
    """Locate where two recorded executions of a run part (each side re-run by ``executor``,
    the local one by default)."""
    from harness.analysis.run import comparable
    from harness.compare.levels import compare

    store, records, cells = _cells(Path(run_dir))
    for cid in (cell_a, cell_b):
        if cid not in records or cid not in cells:
            raise LocateError(f"cell {cid!r} is not in run {run_dir}")
        if records[cid].status != "ok":
            raise LocateError(f"cell {cid!r} did not run ok ({records[cid].status})")
    ra, rb = records[cell_a], records[cell_b]
    if ra.kind != rb.kind:
        raise LocateError(f"cells of different kinds ({ra.kind}, {rb.kind}) cannot be located against each other")
    c = compare(comparable(store, ra), comparable(store, rb))
    if c.level == "bitwise":
        raise LocateError(f"{cell_a} and {cell_b} are bitwise identical: nothing to locate")
    step = c.first_divergence if c.first_divergence is not None else 0
    ca, cb = cells[cell_a], cells[cell_b]
    sides = [
        {
            "doc": x.task_doc,
            "device": x.axes.device,
            "threads": x.axes.threads,
            "profile": x.axes.profile,
            "isa": x.axes.isa,
        }
        for x in (ca, cb)
    ]
    loc = locate_in_workers(ra.kind, sides[0], sides[1], step, (ra.digests, rb.digests), executor=executor)
    da, db = ra.axes.model_dump(), rb.axes.model_dump()
    differs = ", ".join(f"{k} {da[k]} vs {db[k]}" for k in da if da[k] != db[k]) or "nothing recorded"
    explanation = explain_pair(store, ra, rb, ca, cb, c.level, executor=executor)
    return LocateResult(
        cell_a=cell_a,
        cell_b=cell_b,
        kind=ra.kind,
        differs=differs,
        step=loc.step,
        location=loc,
        sentence=sentence(differs, loc),
        explanation=explanation,
    )


def explain_pair(
    store: RunStore, ra: Record, rb: Record, ca: Cell, cb: Cell, level: str, *, executor: Any = None
) -> dict[str, Any] | None:
    """Why the two cells' discrete outputs part, from both sides' distributions at their first
    divergent step (harness.compare.replay.explain_divergence), with the run's margin for the
    dtype; None when their tokens are equal, they drew other random numbers (batch, load), or
    the task cannot be replayed."""
    from harness.analysis.run import comparable, replay_side
    from harness.compare.replay import bounds_for, explain_divergence
    from harness.execution.replay import replay_support
    from harness.spec.policy import policy_of
    from harness.spec.tasks import parse_task

    if level in ("bitwise", "tokens") or ra.axes.batch_size != rb.axes.batch_size or ra.axes.load != rb.axes.load:
        return None
    if replay_support(ra.kind, parse_task(ca.task_doc, ra.kind), ra.axes.device):
        return None
    thresholds = policy_of(store.manifest().matrix_spec, str(store.path / "manifest.json")).thresholds
    sides = [replay_side(r, cell.task_doc, comparable(store, r).arrays) for r, cell in ((ra, ca), (rb, cb))]
    margin = bounds_for(thresholds, ra.axes.dtype).margin
    e = explain_divergence(ra.kind, sides[0], sides[1], margin, executor=executor)
    return e.model_dump() if e is not None else None


def sentence(differs: str, loc: Location) -> str:
    where = "outside the generation steps" if loc.step == Hooks.OUTSIDE else f"at step {loc.step}"
    if loc.module is None:
        return f"{differs}: no module output differs {where} ({loc.compared} compared)"
    hint = operation_hint(loc.module)
    size = f", max abs {loc.max_abs:.1e}, rel-L2 {loc.rel_l2:.1e}" if loc.max_abs is not None else ""
    return (
        f"{differs}: first difference {where} in {loc.module}"
        + (f" ({hint})" if hint else "")
        + size
        + (f"; {loc.note}" if loc.note else "")
    )
