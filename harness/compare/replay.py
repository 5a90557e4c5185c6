"""The replay rule, and why two executions of one task parted.

Why: where honest outputs must differ (bfloat16 under another CPU kernel set gives other codes;
across GPU models this is the normal case) every rule that compares two outputs rejects the
honest node. The replay rule checks each candidate against the task instead
(harness.execution.replay measures; this module decides):

- every position's token is the one the validator samples with the seed's draws, or a
  *near-tie*: its gap (how far the draw was from the boundary between the two tokens under the
  validator's distribution) is within the calibrated ``replay_margin`` of the configuration;
- the output is built from those tokens: for audio the waveform is the decoding of the codes
  within the calibrated decoder bounds (``waveform_max_abs`` / ``waveform_rel_l2``, the
  composite rule's: the spread of one decoder's output across honest machines), for text the
  response is the one the runner builds from the token ids, exactly;
- the structure holds: the frame count the task generates, no row cut short without its end
  of sequence, no token outside the vocabulary.

A node may legitimately have started its generator warm (seeded before generating) or cold
(seeded before loading the model), so both are tried when they differ. The candidate sends no
logits and no margins: everything is recomputed from the task, its output and the model. A task
that cannot be replayed (greedy, beam, CUDA, continuation, a diffusion model) is reported
``not_replayable`` and is never accepted by default.

``explain_divergence``: at the first divergent step of two executions, each side's own
distribution there (its configuration replayed on the shared prefix) says how far its draw was
from picking the other side's token. Both within the honest margin: **benign** (float noise
flipped a near-tie); either beyond it: **suspicious** (a confident token was replaced). Greedy
steps have no draws: the gap is the top-2 logit gap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from harness.compare.levels import float_metrics, within_waveform_bounds
from harness.determinism import torch_threads
from harness.engines.draws import NotReplayable
from harness.spec.policy import ReplayBounds, Thresholds
from harness.vocabulary import DIVERGENCE_CLASSES as DIVERGENCE_CLASSES  # re-exported

if TYPE_CHECKING:  # the replay itself is imported where it runs (it imports torch)
    from harness.engines.base import ModelCache
    from harness.execution.replay import Candidate, Flip, ReplayTrace, StepDetail

#: a one-pass flip whose gap lies within this factor of the margin (either side) is re-checked
#: with forced generation: far below it no one-pass noise makes an honest flip a rejection, far
#: above it none makes a replaced token an acceptance
RECHECK_FACTOR = 4.0


class ReplayDecision(BaseModel):
    """What the replay rule decides for one candidate."""

    accepted: bool | None  # None: not replayable (never an acceptance)
    reason: str
    start: str | None = None  # the generator start that replayed (warm | cold)
    positions: int = 0
    flips: int = 0  # positions whose token was not the one sampled (near-ties when accepted)
    max_gap: float | None = None  # None: infinite (an impossible token)
    margin: float | None = None
    margin_from: str = ""  # "calibrated: FILE, signer" or "uncalibrated: ..." (set by the caller that chose it)
    closest: float | None = None  # the smallest slack of a matched position
    waveform: dict[str, float | int | None] | None = None
    first_flip: dict[str, Any] | None = None
    worst_flip: dict[str, Any] | None = None
    paths: list[str] = Field(default_factory=list)
    seconds: float = 0.0

    @property
    def replayable(self) -> bool:
        return self.accepted is not None


def bounds_for(thresholds: Thresholds, dtype: str | None) -> ReplayBounds:
    """The margin and decoder bounds calibrated for ``dtype`` (the matrix's per-dtype entry,
    else its global ones)."""
    own = next((b for name, b in thresholds.replay_dtypes.items() if name == dtype), None)
    if own is not None:
        return own
    return ReplayBounds(
        margin=thresholds.replay_margin,
        waveform_max_abs=thresholds.waveform_max_abs,
        waveform_rel_l2=thresholds.waveform_rel_l2,
    )


def decide(trace: ReplayTrace, candidate_waveform: np.ndarray | None, bounds: ReplayBounds) -> ReplayDecision:
    """Accept a replay trace (harness.execution.replay.ReplayTrace) or say why not."""
    positions = sum(s.positions for s in trace.stages)
    flips = [f for s in trace.stages for f in s.flips]
    worst = max(flips, key=lambda f: f.gap, default=None)
    closest = min((s.closest for s in trace.stages if s.closest is not None), default=None)
    base: dict[str, Any] = {
        "start": trace.start,
        "positions": positions,
        "flips": len(flips),
        "margin": bounds.margin,
        "closest": closest,
        "max_gap": (_finite(worst.gap) if worst else 0.0),
        "paths": [s.path for s in trace.stages],
        "first_flip": _flip(flips[0], trace) if flips else None,
        "worst_flip": _flip(worst, trace) if worst else None,
        "seconds": sum(sum(s.seconds.values()) for s in trace.stages),
    }
    decoded = next((s.decoded for s in trace.stages if s.decoded is not None), None)  # the audio stage's
    if decoded is not None and candidate_waveform is not None:
        base["waveform"] = float_metrics(np.asarray(candidate_waveform, dtype=np.float32), decoded)
    if trace.problem:
        return ReplayDecision(accepted=False, reason=trace.problem, **base)
    if worst is not None and not worst.gap <= bounds.margin:
        stage = next(s.stage for s in trace.stages if worst in s.flips)
        gap = "an impossible token" if math.isinf(worst.gap) else f"gap {worst.gap:.3g}"
        return ReplayDecision(
            accepted=False,
            reason=(
                f"{stage} step {worst.step} ({_where(stage, worst)}): token {worst.candidate} where the seed samples "
                f"{worst.sampled}, {gap} > margin {bounds.margin:.3g} (a confident token replaced)"
            ),
            **base,
        )
    if decoded is not None and candidate_waveform is None:
        return ReplayDecision(accepted=False, reason="the candidate sent codes but no waveform", **base)
    if decoded is not None:
        metrics = base["waveform"]
        limits = Thresholds(waveform_max_abs=bounds.waveform_max_abs, waveform_rel_l2=bounds.waveform_rel_l2)
        if not within_waveform_bounds(metrics, limits):
            return ReplayDecision(
                accepted=False,
                reason=(
                    f"the waveform is not the decoding of its codes (max abs {_fmt(metrics.get('max_abs'))}, rel-L2 "
                    f"{_fmt(metrics.get('rel_l2'))}, lengths {metrics['length_a']}/{metrics['length_b']}; bounds "
                    f"{bounds.waveform_max_abs:.3g} / {bounds.waveform_rel_l2:.3g})"
                ),
                **base,
            )
    reason = (  # a flipped near-tie is not the seed's token: never say "every one" then
        f"{positions - len(flips)} of {positions} positions are the seed's token, {len(flips)} near-tie(s) "
        f"within margin {bounds.margin:.3g} (largest gap {worst.gap:.3g})"
        if worst
        else f"every one of {positions} positions is the seed's token; no near-tie flipped"
    )
    return ReplayDecision(accepted=True, reason=reason, **base)


def _where(stage: str, f: Flip) -> str:
    return f"codebook {f.row}, frame {f.index}" if stage == "audio" else f"sequence {f.row}, token {f.index}"


def _flip(f: Flip, trace: ReplayTrace) -> dict[str, Any]:
    stage = next(s.stage for s in trace.stages if f in s.flips)
    return {
        "stage": stage,
        "step": f.step,
        "row": f.row,
        "index": f.index,
        "candidate": f.candidate,
        "sampled": f.sampled,
        "gap": _finite(f.gap),
    }


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def candidate_waveform(candidate: Candidate) -> np.ndarray | None:
    wav = candidate.arrays.get("waveform") if hasattr(candidate.arrays, "get") else None
    return None if wav is None else np.asarray(wav)


def validate(
    kind: str,
    task: Any,
    candidate: Candidate,
    thresholds: Thresholds | None = None,
    *,
    device: str = "cpu",
    ran_on: str | None = None,
    batch_size: int = 1,
    cache: ModelCache | None = None,
    starts: tuple[str, ...] = ("warm", "cold"),
    path: str = "auto",
) -> ReplayDecision:
    """The replay rule for one candidate of ``task``, replayed on ``device`` here: accepted from
    the first start (warm, then cold where loading draws) that replays it; else the closest
    rejection (fewest flips). ``ran_on``: the device the candidate says its draws came from
    (a CUDA run cannot be replayed; a false "cpu" only makes an honest CUDA output fail)."""
    from harness.engines.draws import device_problem
    from harness.execution.replay import Options, cold_differs, replay_output

    thr = thresholds or Thresholds()
    bounds = bounds_for(thr, _dtype_of(task))
    tried: list[ReplayDecision] = []
    try:
        why = device_problem(ran_on or device)
        if why:
            raise NotReplayable(why)
        for start in starts:
            if start == "cold" and tried and not cold_differs(kind, task, device):
                continue  # this model loads without drawing: cold is warm
            trace = replay_output(
                kind,
                task,
                candidate,
                device=device,
                cache=cache,
                options=Options(
                    start=start,
                    path=path,
                    rows_in_draw_factor=batch_size,
                    recheck_band=(bounds.margin / RECHECK_FACTOR, bounds.margin * RECHECK_FACTOR),
                ),
            )
            decision = decide(trace, candidate_waveform(candidate), bounds)
            if decision.accepted:
                return decision
            tried.append(decision)
            if decision.flips == 0:  # rejected on structure or waveform: no other start changes that
                break
    except NotReplayable as err:
        return ReplayDecision(accepted=None, reason=f"not replayable: {err}")
    return min(tried, key=lambda d: (d.flips, d.start != "warm"))


def _dtype_of(task: Any) -> str | None:
    stage = getattr(task, "audio_stage", None)
    return getattr(stage if stage is not None else task, "dtype", None)


class Replayer:
    """Replay decisions for many candidates on one machine: one model cache, each distinct
    (task, output) replayed once (a run's repeats and bitwise twins cost nothing more)."""

    def __init__(self, thresholds: Thresholds | None = None, cache: ModelCache | None = None) -> None:
        from harness.engines.base import ModelCache

        self.thresholds = thresholds or Thresholds()
        self.cache = cache if cache is not None else ModelCache()
        self._decisions: dict[tuple[Any, ...], ReplayDecision] = {}

    def decision(
        self,
        key: tuple[Any, ...],
        kind: str,
        task_doc: Mapping[str, Any],
        candidate: Callable[[], Candidate],
        *,
        ran_on: str = "cpu",
        batch_size: int = 1,
        thresholds: Thresholds | None = None,
    ) -> ReplayDecision:
        if key not in self._decisions:
            from harness.spec.tasks import parse_task

            self._decisions[key] = validate(
                kind,
                parse_task(dict(task_doc), kind),
                candidate(),
                thresholds or self.thresholds,
                ran_on=ran_on,
                batch_size=batch_size,
                cache=self.cache,
            )
        return self._decisions[key]


# --- explaining a divergence ------------------------------------------------------------------------


class Explanation(BaseModel):
    """Why two executions of one task picked different tokens at their first divergent step."""

    stage: str  # audio | text
    step: int  # generation step
    row: int  # codebook / returned sequence
    index: int  # frame / token position
    tokens: tuple[int, int]  # (side A's, side B's)
    mode: Literal["sampling", "greedy"]
    gap_a: float | None  # under A's distribution: how far its draw was from picking B's token (None: inf)
    gap_b: float | None
    margin: float
    cls: Literal["benign", "suspicious"]
    computed: str = ""  # where each side's distribution was computed
    sentence: str = ""


def first_divergent_step(stage: str, a: np.ndarray, b: np.ndarray) -> tuple[int, int, int] | None:
    """(generation step, row, index) where two discrete outputs first differ; None: equal.
    MusicGen codes (frames, K): codebook k of frame f is made at step f + k (the delay pattern);
    token ids (rows, n): token t at step t."""
    a, b = np.asarray(a), np.asarray(b)
    if stage == "audio":
        n = min(a.shape[0], b.shape[0])
        differ = np.argwhere(a[:n] != b[:n]) if a.shape[1:] == b.shape[1:] else np.argwhere(np.ones((1, 1), bool))
        if differ.size == 0:
            return None if a.shape == b.shape else (n, 0, n)
        best = min(differ.tolist(), key=lambda fk: (fk[0] + fk[1], fk[1]))
        return best[0] + best[1], best[1], best[0]
    n = min(a.shape[1], b.shape[1])
    rows = min(a.shape[0], b.shape[0])
    aa, bb = a[:rows, :n], b[:rows, :n]
    differ = np.argwhere(aa != bb)
    if differ.size == 0:
        return None if a.shape == b.shape else (n, 0, n)
    t = int(differ[:, 1].min())
    r = int(differ[differ[:, 1] == t][0, 0])
    return t, r, t


def classify(
    detail_a: StepDetail, detail_b: StepDetail, row: int, token_a: int, token_b: int, margin: float, greedy: bool
) -> tuple[float, float, str]:
    """(gap under A, gap under B, class) from each side's step detail."""
    from harness.execution.replay import gap_between

    ga = gap_between(detail_a, row, token_a, token_b)
    gb = gap_between(detail_b, row, token_b, token_a)
    benign = all(math.isfinite(g) and abs(g) <= margin for g in (ga, gb))
    return ga, gb, "benign" if benign else "suspicious"


@dataclass
class Side:
    """One execution to explain: its task document (dtype, quantization, seed applied), its
    discrete output and how it ran."""

    doc: dict[str, Any]
    arrays: Mapping[str, np.ndarray]
    threads: int | None = None
    isa: str = "native"
    batch_size: int = 1
    load: str = "warm"
    response: dict[str, Any] | None = None
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _stage_arrays(kind: str) -> list[tuple[str, str]]:
    """(stage, array) in the order the kind's replayer checks them (its KindSpec names it)."""
    from harness.spec.kinds import KINDS

    replayer = KINDS.replayer(kind)
    return list(replayer.stages) if replayer is not None else []


def explain_divergence(
    kind: str, a: Side, b: Side, margin: float, *, cache: ModelCache | None = None, executor: Any = None
) -> Explanation | None:
    """The first divergent step of two executions, explained from both sides' distributions
    there (each side replayed under its own configuration, on the shared prefix); None when
    the discrete outputs are equal or the task cannot be replayed."""
    for stage, name in _stage_arrays(kind):
        if name not in a.arrays or name not in b.arrays:
            return None
        where = first_divergent_step(stage, a.arrays[name], b.arrays[name])
        if where is None:
            continue
        step, row, index = where
        ta, tb = _token_at(stage, a.arrays[name], row, index), _token_at(stage, b.arrays[name], row, index)
        if ta is None or tb is None:
            return Explanation(
                stage=stage,
                step=step,
                row=row,
                index=index,
                tokens=(ta or -1, tb or -1),
                mode="sampling",
                gap_a=None,
                gap_b=None,
                margin=margin,
                cls="suspicious",
                sentence=f"one side's {stage} output ends at step {step}: it was cut short",
            )
        try:
            da, wa, ga = _side_detail(kind, a, step, stage, cache, executor)
            db, wb, gb = _side_detail(kind, b, step, stage, cache, executor)
        except NotReplayable:
            return None
        if da is None or db is None:
            return None
        greedy = ga or gb
        gap_a, gap_b, cls = classify(da, db, row, ta, tb, margin, greedy)
        what = "top-2 logit gap" if greedy else "distance of the draw from the boundary"
        sentence = (
            f"{stage} step {step} ({'codebook' if stage == 'audio' else 'sequence'} {row}, "
            f"{'frame' if stage == 'audio' else 'token'} {index}): tokens {ta} vs {tb}; {what} "
            f"{_fmt(_finite(gap_a))} under A, {_fmt(_finite(gap_b))} under B; margin {margin:.3g}: {cls}"
            + (" (float noise flipped a near-tie)" if cls == "benign" else " (a confident token was replaced)")
        )
        return Explanation(
            stage=stage,
            step=step,
            row=row,
            index=index,
            tokens=(ta, tb),
            mode="greedy" if greedy else "sampling",
            gap_a=_finite(gap_a),
            gap_b=_finite(gap_b),
            margin=margin,
            cls=cls,
            computed=f"A: {wa}; B: {wb}",
            sentence=sentence,
        )
    return None


def _token_at(stage: str, arr: np.ndarray, row: int, index: int) -> int | None:
    arr = np.asarray(arr)
    if stage == "audio":
        return int(arr[index, row]) if index < arr.shape[0] else None
    return int(arr[row, index]) if index < arr.shape[1] and arr[row, index] >= 0 else None


def _side_detail(
    kind: str, side: Side, step: int, stage: str, cache: ModelCache | None, executor: Any = None
) -> tuple[StepDetail | None, str, bool]:
    """(step detail of the stage, where it was computed, greedy?) for one side, replayed under
    its own configuration: in this process, or for another kernel set as a replay job of
    ``executor`` (the local one by default)."""
    from harness.execution.replay import Candidate, Options, replay_elsewhere, replay_output
    from harness.isa import NATIVE
    from harness.spec.tasks import parse_task

    opts = Options(
        start=side.load, path="stepwise", rows_in_draw_factor=side.batch_size, detail_steps=(step,), allow_greedy=True
    )
    candidate = Candidate(arrays=side.arrays, response=side.response)
    if side.isa != NATIVE:
        out = replay_elsewhere(
            kind, side.doc, candidate, isa=side.isa, threads=side.threads, options=opts, executor=executor
        )
        if out.get("not_replayable"):
            raise NotReplayable(out["not_replayable"])
        return out["details"].get((stage, step)), f"isa {side.isa} worker", _greedy(side.doc, kind, stage)
    with torch_threads(side.threads) as before:
        trace = replay_output(kind, parse_task(side.doc, kind), candidate, cache=cache, options=opts)
    st = next((s for s in trace.stages if s.stage == stage), None)
    return (st.details.get(step) if st else None), f"here, {side.threads or before} thread(s)", bool(st and st.greedy)


def _greedy(doc: dict[str, Any], kind: str, stage: str) -> bool:
    """Whether the stage's generation config is greedy (a staged kind's stage reads its own
    sub-document: the KindSpec's stages, in the replayer's stage order)."""
    from harness.spec.kinds import KINDS

    spec = KINDS.get(kind)
    order = [name for name, _ in _stage_arrays(kind)]
    where = doc.get(spec.stages[order.index(stage)], doc) if spec.stages and stage in order else doc
    gc = where.get("generation_config") or {}
    return gc.get("do_sample") is False
