"""``harness locate RUN --pair A B``: re-execute two cells of a run with module hooks and name
the first module whose output differs (harness.compare.locate does the hooking and comparing).

Each side is run once, in this process, through harness.execution.execute (the call a worker
makes) with the cell's own task document, thread count and profile; its output digest must
equal the recorded one, else the location is refused as unsound (the divergence did not
reproduce here: e.g. it happened only in another process). The step examined is the pair's
first divergent step; when the discrete outputs are equal (a float-only difference) it is
step 0. The modules outside the steps (text encoder, audio decoder) are always examined.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harness.compare.locate import Hooks, LocateError, Location, Trace, first_difference, operation_hint


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


def rerun_traced(
    doc: dict[str, Any],
    kind: str,
    *,
    device: str = "cpu",
    threads: int | None = None,
    profile: str = "on",
    step: int = 0,
    plant: tuple[str, int, Callable[[Any], Any]] | None = None,
) -> tuple[Trace, dict[str, str]]:
    """Execute one task with hooks at ``step``; (trace, output digests). Hooks are removed
    before this returns; torch's thread count is restored."""
    from harness.determinism import apply_environment

    if "torch" not in sys.modules:
        apply_environment(profile)
    import torch

    from harness.engines.base import ModelCache, get_engine
    from harness.execution.execute import execute
    from harness.spec.tasks import parse_task

    before = torch.get_num_threads()
    try:
        task = parse_task(doc, kind)
        cache = ModelCache()
        loaded, _ = cache.get(get_engine(kind), task, device)
        with Hooks(kind, loaded.objects, step, plant) as hooks:
            ex = execute(task, kind, device, cache, threads=threads, profile=profile)
        return hooks.trace, ex.output.digests()
    finally:
        torch.set_num_threads(before)


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
        if want is not None and (
            digests.get("output") != want.get("output") or digests.get("tokens") != want.get("tokens")
        ):
            raise LocateError(
                f"side {label}: the re-run's output differs from the recorded one; the divergence "
                f"does not reproduce here, so it cannot be located soundly"
            )
        traces.append(trace)
    return first_difference(traces[0], traces[1])


def _cells(run_dir: Path):
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


def locate_run_pair(run_dir: str | Path, cell_a: str, cell_b: str) -> LocateResult:
    """Locate where two recorded executions of a run part."""
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
        {"doc": x.task_doc, "device": x.axes.device, "threads": x.axes.threads, "profile": x.axes.profile}
        for x in (ca, cb)
    ]
    loc = locate_docs(ra.kind, sides[0], sides[1], step, (ra.digests, rb.digests))
    da, db = ra.axes.model_dump(), rb.axes.model_dump()
    differs = ", ".join(f"{k} {da[k]} vs {db[k]}" for k in da if da[k] != db[k]) or "nothing recorded"
    explanation = explain_pair(store, ra, rb, ca, cb, c.level)
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


def explain_pair(store, ra, rb, ca, cb, level: str) -> dict[str, Any] | None:
    """Why the two cells' discrete outputs part, from both sides' distributions at their first
    divergent step (harness.compare.replay.explain_divergence), with the run's margin for the
    dtype; None when their tokens are equal, they drew other random numbers (batch, load), or
    the task cannot be replayed."""
    from harness.analysis.run import comparable
    from harness.compare.replay import Side, bounds_for, explain_divergence
    from harness.execution.replay import replay_support
    from harness.spec.policy import policy_of
    from harness.spec.tasks import parse_task

    if level in ("bitwise", "tokens") or ra.axes.batch_size != rb.axes.batch_size or ra.axes.load != rb.axes.load:
        return None
    if replay_support(ra.kind, parse_task(ca.task_doc, ra.kind), ra.axes.device):
        return None
    thresholds = policy_of(store.manifest().matrix_spec, str(store.path / "manifest.json")).thresholds
    sides = [
        Side(
            doc=cell.task_doc,
            arrays=comparable(store, r).arrays,
            threads=r.axes.threads,
            isa=r.axes.isa,
            batch_size=r.axes.batch_size,
            load=r.axes.load,
            response=r.output.get("response"),
            label=r.cell_id,
        )
        for r, cell in ((ra, ca), (rb, cb))
    ]
    e = explain_divergence(ra.kind, sides[0], sides[1], bounds_for(thresholds, ra.axes.dtype).margin)
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
