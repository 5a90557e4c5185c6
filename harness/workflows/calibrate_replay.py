"""The replay rule's calibration from study runs (``harness calibrate --rule replay``).

Why its own module: replay needs the validator's model. The validator is this process (the
kernels it runs on, one thread, its own model copies); every honest execution of the study and
every cheat is checked against its task with harness.compare.replay.validate, as a run's
analysis does.

Calibration half (its tasks only): each honest execution is replayed in one pass; the margin is
``CALIBRATION_MARGIN`` x the larger of the largest honest flip gap and twice the validator's
one-pass noise (the largest score difference between its one pass and forced generation on the
same output: a flip needs a perturbation of the difference of two scores); the decoder bounds
are ``CALIBRATION_MARGIN`` x the largest honest distance between an execution's waveform and
the validator's decoding of its codes. Held out: the rule itself on every distinct honest
execution (false reject, and apart where its codes differ from the task's reference) and on
the cheats (harness.compare.cheats, re-decoded with the validator's model; a code forced at
the position the honest replay was most confident about).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.analysis.calibration import CALIBRATION_MARGIN, ConfigKey, Execution, HonestPair, wilson
from harness.analysis.calibration_study import ConfigStudy, Judged, cheat_sources, reference, scope_of, source_table
from harness.compare.levels import Comparable, Thresholds, float_metrics
from harness.determinism import torch_threads
from harness.errors import HarnessError
from harness.spec.calibration import MAX_REPLAY_MARGIN, Entry
from harness.spec.kinds import KINDS, load_object

#: the one-pass noise is measured on this many calibration tasks (it costs a forced generation each)
NOISE_TASKS = 2


class MarginAboveCeiling(HarnessError, ValueError):
    """A configuration whose honest replays need a margin above the ceiling: it is left out of
    the calibration with this line (a trained model's bfloat16 logits round in steps the ceiling,
    set on random-weight models, does not allow: docs/standins.md)."""


class Validator:
    """This process as the validator: one model cache, one thread while it replays."""

    def __init__(self) -> None:
        from harness.engines.base import ModelCache

        self.cache = ModelCache(capacity=8)
        self.replays = 0

    def task(self, e: Execution) -> Any:
        from harness.spec.tasks import parse_task

        return parse_task(e.doc, e.config.kind)

    def trace(self, e: Execution, c: Comparable, **options: Any) -> Any:
        from harness.execution.replay import Candidate, Options, replay_output

        self.replays += 1
        cand = Candidate(arrays={k: np.asarray(c.arrays[k]) for k in ("codes", "waveform") if k in c.arrays})
        return replay_output(e.config.kind, self.task(e), cand, cache=self.cache, options=Options(**options))

    def decide(self, e: Execution, c: Comparable, thr: Thresholds) -> Any:
        from harness.compare.replay import validate
        from harness.execution.replay import Candidate

        self.replays += 1
        cand = Candidate(arrays={k: np.asarray(c.arrays[k]) for k in ("codes", "waveform") if k in c.arrays})
        return validate(e.config.kind, self.task(e), cand, thr, cache=self.cache)

    def decoder(self, e: Execution) -> Any:
        from harness.engines.base import get_engine
        from harness.execution.replay import decode_codes

        loaded, _ = self.cache.get(get_engine(e.config.kind), self.task(e), "cpu")
        model = loaded.objects["model"]
        return lambda codes: decode_codes(model, codes)


def one_pass_noise(v: Validator, e: Execution) -> float:
    """The largest score difference between the validator's one pass and forced generation."""
    steps = tuple(range(int(np.asarray(e.output.arrays["codes"]).shape[0]) + 8))
    one = v.trace(e, e.output, path="one-pass", detail_steps=steps).stages[0]
    forced = v.trace(e, e.output, path="stepwise", detail_steps=steps).stages[0]
    worst = 0.0
    for t, d in forced.details.items():
        o = one.details.get(t)
        if o is not None and (o.kept & d.kept).any():
            both = o.kept & d.kept
            worst = max(worst, float(np.abs(o.scores[both] - d.scores[both]).max()))
    return worst


def most_confident(v: Validator, e: Execution) -> tuple[int, int, int] | None:
    """(frame, codebook, runner-up code) where the honest replay's draw was farthest from a flip."""
    codes = np.asarray(e.output.arrays["codes"])
    steps = tuple(range(codes.shape[0] + codes.shape[1]))
    stage = v.trace(e, e.output, path="one-pass", detail_steps=steps).stages[0]
    best = None
    for t, d in stage.details.items():
        z = np.where(d.kept, d.scores - d.log_draws, -np.inf)
        for r in np.nonzero(d.valid)[0]:
            order = np.argsort(-z[r])
            if np.isfinite(z[r, order[1]]) and (best is None or z[r, order[0]] - z[r, order[1]] > best[0]):
                best = (float(z[r, order[0]] - z[r, order[1]]), t - int(r), int(r), int(order[1]))
    return None if best is None else best[1:]


def _distinct(executions: list[Execution]) -> list[Execution]:
    """One execution per (task, output): bitwise twins replay alike."""
    seen, out = set(), []
    for e in sorted(executions, key=lambda e: e.label):
        key = (e.task, e.output.output_digest(), e.output.tokens_digest())
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def calibrate_replay(
    config: ConfigKey,
    pairs: list[HonestPair],
    by_task: dict[tuple[ConfigKey, str], list[Execution]],
    held: frozenset[str],
    validator: Validator | None = None,
) -> ConfigStudy:
    v = validator or Validator()
    with torch_threads(1):
        return _calibrate(v, config, pairs, by_task, held)


def _calibrate(
    v: Validator,
    config: ConfigKey,
    pairs: list[HonestPair],
    by_task: dict[tuple[ConfigKey, str], list[Execution]],
    held: frozenset[str],
) -> ConfigStudy:
    table = source_table(pairs, held)
    tasks = sorted({p.task for p in pairs})
    honest = {t: _distinct(by_task[(config, t)]) for t in tasks}
    gap = max_abs = rel = 0.0
    for t in (t for t in tasks if t not in held):
        for e in honest[t]:
            stage = v.trace(e, e.output, path="one-pass").stages[0]
            if stage.problem is None:
                gap = max(gap, stage.max_gap)
                m = float_metrics(np.asarray(e.output.arrays["waveform"]), stage.decoded)
                max_abs, rel = max(max_abs, m["max_abs"] or 0.0), max(rel, m["rel_l2"] or 0.0)
    calibrating = [reference(by_task[(config, t)]) for t in tasks if t not in held][:NOISE_TASKS]
    noise = max((one_pass_noise(v, e) for e in calibrating), default=0.0)
    margin = CALIBRATION_MARGIN * max(gap, 2 * noise)
    if margin > MAX_REPLAY_MARGIN:
        raise MarginAboveCeiling(
            f"{config.name}: the measured margin {margin:.3g} (largest honest flip gap {gap:.3g}, one-pass noise "
            f"{noise:.3g}) is above the ceiling {MAX_REPLAY_MARGIN:g} (harness.spec.calibration.MAX_REPLAY_MARGIN): "
            f"the replay rule is not calibrated for it"
        )
    thr = Thresholds(
        replay_margin=margin,
        waveform_max_abs=max(CALIBRATION_MARGIN * max_abs, 1e-9),
        waveform_rel_l2=max(CALIBRATION_MARGIN * rel, 1e-9),
    )
    judged_honest: list[Judged] = []
    judged_cheats: list[Judged] = []
    maker = load_object(KINDS.get(config.kind).cheats["replay"])
    for t in (t for t in tasks if t in held):
        ref = reference(by_task[(config, t)])
        for e in honest[t]:
            d = v.decide(e, e.output, thr)
            other_codes = e.output.tokens_digest() != ref.output.tokens_digest()
            source = _source_of(e, ref, pairs)
            judged_honest.append(Judged(source, d.accepted is True, _score(d, thr), other_codes, d.reason))
        _, src = cheat_sources(config, t, by_task, ref.output, thr.waveform_max_abs)
        src = type(src)(**{**src.__dict__, "redecode": v.decoder(ref), "confident": most_confident(v, ref)})
        for what, cand in maker(src):
            d = v.decide(ref, cand, thr)
            judged_cheats.append(Judged(what, d.accepted is True, _score(d, thr), reason=d.reason))
    differ = [h for h in judged_honest if h.codes_differ]
    notes = [f"held-out FRR where honest codes differ: {sum(not h.accepted for h in differ)}/{len(differ)}"]
    entry = Entry(
        scope=scope_of(config, pairs, sorted(table)),
        waveform_max_abs=thr.waveform_max_abs,
        waveform_rel_l2=thr.waveform_rel_l2,
        false_reject=wilson(sum(not h.accepted for h in judged_honest), len(judged_honest)),
        false_accept=wilson(sum(c.accepted for c in judged_cheats), len(judged_cheats)),
        replay_margin=margin,
        notes=notes,
    )
    details = {
        "honest_max_gap": gap,
        "one_pass_noise": noise,
        "margin": margin,
        "replays": v.replays,
        "frr_codes_differ": wilson(sum(not h.accepted for h in differ), len(differ)).model_dump(),
        "rejected_honest": [f"{h.what}: {h.reason}" for h in judged_honest if not h.accepted],
        "accepted_cheats": [f"{c.what}: {c.reason}" for c in judged_cheats if c.accepted],
    }
    return ConfigStudy(
        config=config, entry=entry, pairs=table, honest=judged_honest, cheats=judged_cheats, details=details
    )


def _source_of(e: Execution, ref: Execution, pairs: list[HonestPair]) -> str:
    """The source that separates an execution from its task's reference ("reference" for itself)."""
    if e is ref:
        return "reference"
    return next((p.source for p in pairs if {id(p.a), id(p.b)} == {id(e), id(ref)}), "other")


def _score(d: Any, thr: Thresholds) -> float | None:
    """Accepted at threshold scale t iff score <= t (DET); None: never (a structural rejection)."""
    w = d.waveform
    if d.accepted is None or d.max_gap is None or not w or w.get("max_abs") is None or w["length_a"] != w["length_b"]:
        return None
    return float(
        max(
            d.max_gap / max(thr.replay_margin, 1e-12),
            w["max_abs"] / max(thr.waveform_max_abs, 1e-30),
            w["rel_l2"] / max(thr.waveform_rel_l2, 1e-30),
        )
    )
