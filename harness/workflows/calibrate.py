"""``harness calibrate``: a rule's calibration file, derived from study runs and bundles.

Why from runs: a study is a matrix whose axes are the honest sources and whose tasks are
prompts and seeds, so it runs on any executor (``--parallel``, ``--resume``, Ray, GPU nodes)
and on any model; another machine's run or bundle is one more honest source (``machine``).
This module reads them (harness.analysis.calibration pairs and splits), makes each kind's
cheats from the runs' own outputs (the KindSpec's ``cheats``, harness.compare.cheats), measures
the rule on the held-out half and writes one entry per configuration with its scope.

Composite (codes equal, waveform within bounds): a source whose honest pairs change codes
cannot pass it, whatever its bounds, so it is left out of the entry's scope with the measured
reason; the bounds are ``CALIBRATION_MARGIN`` x the largest honest max-abs and rel-L2 of the
calibration half's in-scope pairs. Replay: harness.workflows.calibrate_replay.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.analysis.calibration import (
    CALIBRATION_MARGIN,
    CalibrationInputError,
    ConfigKey,
    Execution,
    HonestPair,
    StudyRun,
    executions,
    held_out,
    honest_pairs,
    waveform_spread,
    wilson,
)
from harness.analysis.calibration_study import (
    CalibrationStudy,
    ConfigStudy,
    Judged,
    cheat_sources,
    reference,
    scope_of,
    source_table,
)
from harness.compare.levels import Comparable, Thresholds
from harness.compare.validators import composite_judged
from harness.spec.calibration import Calibration, Entry, Rate
from harness.spec.kinds import KINDS, load_object
from harness.vocabulary import FAILED_STATUSES

RULES = ("composite", "replay")
#: rules with nothing to calibrate, and why (a kind whose network rule this is needs no file)
NOTHING_TO_CALIBRATE = {"result_hash": "the result hash has no bound to measure: equal or not"}


def open_runs(paths: Sequence[str | Path], stack: contextlib.ExitStack) -> list[StudyRun]:
    """Each run directory or bundle opened (and verified), refused with one line when a study
    run is incomplete: a calibration is never made on fewer cells than its study asked."""
    from harness.analysis.evidence import expected_cells
    from harness.analysis.run import latest_records
    from harness.store.bundle import open_run_or_bundle

    opened = []
    for path in paths:
        run = stack.enter_context(open_run_or_bundle(path))
        loaded = run.store.load_records()
        if loaded.problems:
            raise CalibrationInputError(f"{path}: unreadable records ({loaded.problems[0]})")
        records = {r.cell_id: r for r in latest_records(loaded.records)}
        manifest = run.store.manifest()
        expected = expected_cells(manifest) or {}
        missing = sorted(set(expected) - set(records))
        failed = [r for r in records.values() if r.status in FAILED_STATUSES]
        if missing or failed:
            parts = [f"{len(missing)} cell(s) missing (first: {missing[0]})"] if missing else []
            parts += [f"{len(failed)} failed (first: {failed[0].cell_id}: {failed[0].reason})"] if failed else []
            raise CalibrationInputError(
                f"{path}: the study is incomplete: {'; '.join(parts)}; finish it (harness run --resume) "
                f"or re-run those cells: a calibration is never made on fewer cells than the study asked"
            )
        opened.append(StudyRun(run.store, manifest, list(records.values())))
    return opened


def calibratable(runs: list[Execution], rule: str, paths: Sequence[str | Path]) -> tuple[list[Execution], list[str]]:
    """The executions of the kinds that can calibrate ``rule``, checked to be one study: the
    configurations of the first run (another model's or kind's run mixed in is refused), one
    set of weights per model."""
    notes, kept = [], []
    kinds = sorted({e.config.kind for e in runs})
    for kind in kinds:
        if rule not in (KINDS.get(kind).cheats if kind in KINDS else {}):
            network = KINDS.get(kind).network_rule[0] if kind in KINDS else "result_hash"
            why = (
                f"; its network rule, {network}: {NOTHING_TO_CALIBRATE[network]}"
                if network in NOTHING_TO_CALIBRATE
                else ""
            )
            notes.append(f"{kind}: left out: harness calibrate makes no {rule} calibration for this kind{why}")
    for e in runs:
        if rule in (KINDS.get(e.config.kind).cheats if e.config.kind in KINDS else {}):
            kept.append(e)
    if not kept:
        raise CalibrationInputError(f"{paths[0]}: nothing to calibrate for the {rule} rule ({'; '.join(notes)})")
    study = {(e.config.kind, e.config.model) for e in runs if e.source == 0}
    for i, path in enumerate(paths[1:], start=1):
        theirs = {(e.config.kind, e.config.model) for e in runs if e.source == i}
        if theirs and not theirs & study:
            other = ", ".join(f"{k} {m}" for k, m in sorted(theirs))
            mine = ", ".join(f"{k} {m}" for k, m in sorted(study)) or "nothing calibratable"
            raise CalibrationInputError(f"{path}: holds {other}, another model or kind than the study ({mine})")
    weights: dict[str, set[str]] = defaultdict(set)
    for e in kept:
        if e.weights:
            weights[e.config.model].add(e.weights)
    for model, digests in weights.items():
        if len(digests) > 1:
            raise CalibrationInputError(
                f"the runs hold {model} with {len(digests)} different weights "
                f"({', '.join(sorted(d[:12] for d in digests))})"
            )
    return [e for e in kept if (e.config.kind, e.config.model) in study], notes


def calibrate_composite(
    config: ConfigKey,
    pairs: list[HonestPair],
    by_task: dict[tuple[ConfigKey, str], list[Execution]],
    held: frozenset[str],
) -> ConfigStudy:
    table = source_table(pairs, held)
    notes, sources = [], []
    for source, row in table.items():
        if row["codes_differ"]:
            notes.append(
                f"{source}: codes differ in {row['codes_differ']} of {row['pairs']} honest pairs, so the composite "
                f"rule (codes equal) cannot accept them; {source} is outside this entry's scope"
            )
        else:
            sources.append(source)
    kept = [p for p in pairs if p.source in sources]
    max_abs, rel = waveform_spread(p for p in kept if p.task not in held)
    thr = Thresholds(waveform_max_abs=max_abs * CALIBRATION_MARGIN, waveform_rel_l2=rel * CALIBRATION_MARGIN)
    judged_honest: list[Judged] = []
    judged_cheats: list[Judged] = []
    for p in kept:
        if p.task in held:
            ok, score = composite_judged(p.a.output, p.b.output, thr)
            table[p.source]["rejected"] += not ok
            judged_honest.append(Judged(p.source, ok, _finite(score)))
    for task in sorted({p.task for p in pairs if p.task in held}):
        ref, src = cheat_sources(config, task, by_task, _other_hardware(kept, task, config, by_task), max_abs)
        maker = load_object(KINDS.get(config.kind).cheats["composite"])
        references = _sharing_codes(ref, [e for p in kept if p.task == task for e in (p.a, p.b)])
        for what, cand in maker(src):
            for r in references:  # every honest node the cheat could be grouped with
                ok, score = composite_judged(r.output, cand, thr)
                judged_cheats.append(Judged(what, ok, _finite(score)))
    entry = Entry(
        scope=scope_of(config, kept or pairs, sources),
        waveform_max_abs=thr.waveform_max_abs,
        waveform_rel_l2=thr.waveform_rel_l2,
        false_reject=_rate(h.accepted is False for h in judged_honest),
        false_accept=_rate(c.accepted for c in judged_cheats),
        notes=notes,
    )
    return ConfigStudy(
        config=config,
        entry=entry,
        pairs=table,
        honest=judged_honest,
        cheats=judged_cheats,
        details={"honest_max_abs": max_abs, "honest_max_rel_l2": rel, "margin": CALIBRATION_MARGIN},
    )


def _sharing_codes(ref: Execution, runs: list[Execution]) -> list[Execution]:
    """The task's honest executions (one per distinct output) whose codes are the reference's:
    the nodes a cheat that keeps or edits the honest codes competes with."""
    out: dict[str | None, Execution] = {ref.output.output_digest(): ref}
    for e in sorted(runs, key=lambda e: e.label):
        if e.output.tokens_digest() == ref.output.tokens_digest():
            out.setdefault(e.output.output_digest(), e)
    return list(out.values())


def _other_hardware(
    kept: list[HonestPair], task: str, config: ConfigKey, by_task: dict[tuple[ConfigKey, str], list[Execution]]
) -> Comparable:
    """The task's honest output on other hardware (what a cheater edits): the reference's
    partner in an in-scope pair other than a repeat, else the reference itself."""
    ref = reference(by_task[(config, task)])
    for p in sorted(kept, key=lambda p: p.source == "repeat"):
        if p.task == task and (p.a is ref or p.b is ref):
            return (p.b if p.a is ref else p.a).output
    return ref.output


def _rate(errors: Any) -> Rate:
    flags = list(errors)
    return wilson(sum(bool(x) for x in flags), len(flags))


def _finite(x: float) -> float | None:
    return None if x == float("inf") else float(x)


def run_calibration(paths: Sequence[str | Path], rule: str = "composite", **replay_options: Any) -> CalibrationStudy:
    """Read the runs and bundles, pair, split, make the cheats and calibrate ``rule`` per configuration."""
    if rule not in RULES:
        raise CalibrationInputError(f"unknown rule {rule!r}; harness calibrate makes {', '.join(RULES)}")
    if not paths:
        raise CalibrationInputError("give at least one study run or bundle")
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        opened = open_runs(paths, stack)
        runs, notes = calibratable(executions(opened), rule, paths)
        by_config, left_out = honest_pairs(runs)
        notes += left_out
        by_task: dict[tuple[ConfigKey, str], list[Execution]] = defaultdict(list)
        for e in runs:
            by_task[(e.config, e.task)].append(e)
        # the study's configurations (the first run's); the others' executions of other
        # configurations serve as cheats (a lower precision passed off)
        configs = sorted({e.config for e in runs if e.source == 0}, key=lambda c: c.name)
        for config in configs:
            if not by_config.get(config):
                raise CalibrationInputError(
                    f"no honest pairs for {config.name}: each of its tasks ran once (a study needs repeats, "
                    f"workers, threads, kernel levels or another run of the same tasks)"
                )
        tasks = {p.task for c in configs for p in by_config[c]}
        if len(tasks) < 2:
            raise CalibrationInputError(
                f"the runs hold honest pairs for {len(tasks)} task(s); holding out needs at least 2 "
                f"(more seeds or prompts)"
            )
        held = held_out(tasks)
        if rule == "composite":
            studies = [calibrate_composite(c, by_config[c], by_task, held) for c in configs]
        else:
            from harness.workflows.calibrate_replay import MarginAboveCeiling, calibrate_replay

            studies, above = [], []
            for c in configs:
                try:
                    studies.append(calibrate_replay(c, by_config[c], by_task, held, **replay_options))
                except MarginAboveCeiling as why:  # left out, said: never a margin above the ceiling
                    above.append(f"{why}; left out")
            notes += above
            if not studies:
                raise CalibrationInputError(f"no configuration could be calibrated: {'; '.join(above)}")
        seconds = time.perf_counter() - start
        made_by = (
            f"harness calibrate --rule {rule}: {len(runs)} executions of {len(tasks)} tasks "
            f"({len(tasks) - len(held)} calibrate, {len(held)} held out, split by task) from "
            f"{', '.join(Path(p).name for p in paths)}; held-out pairs share their {len(held)} held-out tasks and "
            f"executions, so the intervals (which treat pairs as independent) are narrower than the evidence"
        )
        cal = Calibration(rule=rule, made_by=made_by, entries=[s.entry for s in studies]).sealed()
        return CalibrationStudy(rule, cal, studies, [str(p) for p in paths], notes, seconds, len(runs))
