"""Held-out error rates of the replay rule where honest codes differ, and the network's figures
for a mixed CPU fleet under each rule.

Why: every rule that compares two outputs (result hash, codes equal, composite) rejects an
honest node whose codes differ, and on this CPU bfloat16 MusicGen gives other codes under AVX2
kernels than under the native ones. The replay rule checks each output against the task
instead (harness.compare.replay). Its worth is two numbers measured where it matters:

Honest candidates (tiny MusicGen, float32 and bfloat16, each claiming its own task): the same
task at 2 threads (``threads``), in a second worker process (``process``), in fresh workers at
other CPU kernel levels (``isa:avx2``, ``isa:scalar``: harness.isa caps ATen, oneDNN and oneMKL
before torch starts), and the validator's own execution again (``repeat``). The validator is this
process at native kernels and one thread.

Cheats, each claiming the task: another seed; another prompt; a code forced at the position the
honest replay was most confident about (to its runner-up, the audio re-decoded so only the codes
give it away); a partial re-generation (honest codes up to the middle, another seed's after,
re-decoded); truncation (the last frames dropped, re-decoded); the other dtype's real output
passed off as float32; honest codes with an edited waveform (a quiet overdub 3x the calibrated
decoder bound). Reported beside them, and left out of the false accept rate: float32 passed off
as bfloat16 (a more precise, costlier run than asked: no saving to cheat for; replay accepts it
whenever its codes replay within bfloat16's margin, a limit the study shows).

Calibration: tasks with an even seed index calibrate, the others are held out. The margin is
``CALIBRATION_MARGIN`` x the larger of the largest honest flip gap and twice the validator's own
one-pass noise (the largest score difference between its one pass and forced generation on the
same output: a flip needs a perturbation of the difference of two scores). The decoder bounds are
``CALIBRATION_MARGIN`` x the largest honest distance between a candidate's waveform and the
validator's decoding of its codes. Every rate is measured on the held-out half with the real rule
(harness.compare.replay.validate: warm then cold starts, one pass re-checked near the margin),
with Wilson 95% intervals; the DET curve sweeps one scale over the margin and the bounds together.

The fleet: for each held-out task the native and the AVX2 execution are two environments; a
3-node group is drawn from a half-and-half mix (harness.compare.agreement.simulate) under
``result_hash``, ``composite`` (its bounds calibrated on the same calibration half) and
``replay``.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis.studies import ConfigStudy, ReplayStudyResult, ReplayStudySettings
from harness.compare.levels import Comparable, Thresholds, float_metrics
from harness.compare.replay import ReplayDecision, validate
from harness.spec.calibration import Calibration, Entry, Scope
from harness.workflows.calibration_study import _doc, _run_worker, wilson
from harness.workflows.validator_study import _comparable, _edit, calibrate, det_frame, generate

CALIBRATION_MARGIN = 2.0
#: the edited waveform's amplitude, in calibrated decoder bounds
EDIT_BOUNDS = 3.0
FLEET = {"native": 0.5, "avx2": 0.5}
#: reported, not counted as cheats (a costlier computation than asked)
NOT_COUNTED = ("float32 passed off as bfloat16",)
RULES = ("result_hash", "composite", "replay")


FULL = ReplayStudySettings()
QUICK = ReplayStudySettings(seeds=2, max_new_tokens=16, levels=("avx2",))


def _candidate(c: Comparable):
    from harness.execution.replay import Candidate

    return Candidate(arrays={"codes": np.asarray(c.arrays["codes"]), "waveform": np.asarray(c.arrays["waveform"])})


def _score(d: ReplayDecision, thr: Thresholds) -> float:
    """The rule accepts this decision's candidate at threshold scale t iff score <= t (DET)."""
    if d.accepted is None or d.max_gap is None or d.waveform is None or d.waveform.get("max_abs") is None:
        return math.inf
    w = d.waveform
    if w["length_a"] != w["length_b"]:
        return math.inf
    return max(
        d.max_gap / max(thr.replay_margin, 1e-12),
        w["max_abs"] / max(thr.waveform_max_abs, 1e-30),
        w["rel_l2"] / max(thr.waveform_rel_l2, 1e-30),
    )


def _det(honest: list[float], cheats: list[float]) -> dict[str, list[float]]:
    hs, cs = np.array(honest), np.array(cheats)
    finite = np.concatenate([hs, cs])
    points = np.unique(np.concatenate([[0.0, 1.0], finite[np.isfinite(finite)]]))
    return {
        "threshold": points.tolist(),
        "frr": [float(np.mean(hs > t)) for t in points],
        "far": [float(np.mean(cs <= t)) for t in points],
        "operating": [float(np.mean(hs > 1.0)), float(np.mean(cs <= 1.0))],
    }


class _Validator:
    """The validator: this process, native kernels, one thread, its own model copies."""

    def __init__(self):
        from harness.engines.base import ModelCache

        self.cache = ModelCache(capacity=8)
        self.replays = 0

    def task(self, doc: dict[str, Any]):
        from harness.spec.tasks import parse_task

        return parse_task(doc, "audio")

    def trace(self, doc: dict[str, Any], c: Comparable, **options):
        from harness.execution.replay import Options, replay_output

        self.replays += 1
        return replay_output("audio", self.task(doc), _candidate(c), cache=self.cache, options=Options(**options))

    def decide(self, doc: dict[str, Any], c: Comparable, thr: Thresholds) -> ReplayDecision:
        self.replays += 1
        return validate("audio", self.task(doc), _candidate(c), thr, cache=self.cache)

    def model(self, doc: dict[str, Any]):
        from harness.engines.base import get_engine

        loaded, _ = self.cache.get(get_engine("audio"), self.task(doc), "cpu")
        return loaded.objects["model"]

    def decoded(self, doc: dict[str, Any], codes: np.ndarray, rate: int) -> Comparable:
        from harness.execution.replay import decode_codes

        return _comparable(decode_codes(self.model(doc), codes), codes, rate)


def _one_pass_noise(v: _Validator, doc: dict[str, Any], c: Comparable) -> float:
    """The largest score difference between the validator's one pass and forced generation."""
    steps = tuple(range(int(np.asarray(c.arrays["codes"]).shape[0]) + 8))
    one = v.trace(doc, c, path="one-pass", detail_steps=steps).stages[0]
    forced = v.trace(doc, c, path="stepwise", detail_steps=steps).stages[0]
    worst = 0.0
    for t, d in forced.details.items():
        o = one.details.get(t)
        if o is None:
            continue
        both = o.kept & d.kept
        if both.any():
            worst = max(worst, float(np.abs(o.scores[both] - d.scores[both]).max()))
    return worst


def _forced_code(v: _Validator, doc: dict[str, Any], honest: Comparable) -> Comparable:
    """The code at the honest replay's most confident position replaced by its runner-up."""
    codes = np.asarray(honest.arrays["codes"]).copy()
    steps = tuple(range(codes.shape[0] + codes.shape[1]))
    stage = v.trace(doc, honest, path="one-pass", detail_steps=steps).stages[0]
    best = None
    for t, d in stage.details.items():
        z = np.where(d.kept, d.scores - d.log_draws, -np.inf)
        for r in np.nonzero(d.valid)[0]:
            order = np.argsort(-z[r])
            if not np.isfinite(z[r, order[1]]):
                continue
            slack = z[r, order[0]] - z[r, order[1]]
            if best is None or slack > best[0]:
                best = (slack, t, int(r), int(order[1]))
    if best is None:  # a single token kept everywhere: any other code
        codes[codes.shape[0] // 2, 0] = (codes[codes.shape[0] // 2, 0] + 1) % 256
    else:
        _, t, r, runner_up = best
        codes[t - r, r] = runner_up
    return v.decoded(doc, codes, honest.sampling_rate or 1)


def run_study(settings: ReplayStudySettings = FULL) -> ReplayStudyResult:
    import torch

    from harness.isa import unavailable

    if settings.seeds < 2 or len(settings.prompts) < 2:
        raise ValueError("the study needs at least 2 seeds and 2 prompts (for the other-seed/other-prompt cheats)")
    start = time.perf_counter()
    notes: list[str] = []
    levels = []
    for level in settings.levels:
        why = unavailable(level)
        if why:
            notes.append(f"isa {level} left out: {why}")
        else:
            levels.append(level)
    tasks = [(p, s) for p in range(len(settings.prompts)) for s in range(settings.seeds)]
    held = lambda key: key[1] % 2 == 1
    configs = list(settings.configs)
    runs: dict[tuple, Comparable] = {}
    jobs = [(cfg, key, threads) for threads in (1, 2) for cfg in configs for key in tasks]
    outs = generate([(_doc(settings, key[0], key[1], *cfg), threads) for cfg, key, threads in jobs])
    for (cfg, key, threads), out in zip(jobs, outs, strict=True):
        runs[(cfg, key, "t1" if threads == 1 else "t2")] = out
    classes: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="harness-replay-study-") as tmp:
        for source, level in [("process", "native"), *((f"isa:{lv}", lv) for lv in levels)]:
            wjobs = [(cfg, key) for cfg in configs for key in tasks]
            wouts, kclass = _run_worker(
                [(_doc(settings, key[0], key[1], *cfg), 1) for cfg, key in wjobs], level, Path(tmp)
            )
            classes.add(kclass)
            runs.update({(cfg, key, source): out for (cfg, key), out in zip(wjobs, wouts, strict=False)})
    from harness.execution.env import kernels_in_force

    classes.add(kernels_in_force()["class"])
    generations = len(runs)
    sources = ["repeat", "threads", "process", *(f"isa:{lv}" for lv in levels)]
    name = {"repeat": "t1", "threads": "t2"}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    v = _Validator()
    try:
        studies = [_study_config(settings, cfg, configs, tasks, runs, sources, name, held, v) for cfg in configs]
    finally:
        torch.set_num_threads(before)
    calibration = _calibration(settings, studies, sorted(classes), levels)
    summary = _summary(studies)
    return ReplayStudyResult(
        settings=settings,
        configs=studies,
        calibration=calibration,
        seconds=time.perf_counter() - start,
        generations=generations,
        replays=v.replays,
        kernel_classes=sorted(classes),
        levels=levels,
        summary=summary,
        notes=notes,
    )


def _study_config(settings, cfg, configs, tasks, runs, sources, name, held, v: _Validator) -> ConfigStudy:
    from harness.compare.agreement import simulate
    from harness.compare.validators import composite, result_hash

    dtype, bits = cfg
    doc = lambda key: _doc(settings, key[0], key[1], dtype, bits)
    cand = lambda key, source: runs[(cfg, key, name.get(source, source))]
    # --- calibration half: raw gaps and decoder distances of the honest candidates
    gap, max_abs, rel = 0.0, 0.0, 0.0
    for key in [k for k in tasks if not held(k)]:
        for source in sources:
            c = cand(key, source)
            stage = v.trace(doc(key), c, path="one-pass").stages[0]
            if stage.problem is None:
                gap = max(gap, stage.max_gap)
                m = float_metrics(np.asarray(c.arrays["waveform"]), stage.decoded)
                max_abs, rel = max(max_abs, m["max_abs"] or 0.0), max(rel, m["rel_l2"] or 0.0)
    noise = max(_one_pass_noise(v, doc(key), cand(key, "repeat")) for key in [k for k in tasks if not held(k)][:2])
    margin = CALIBRATION_MARGIN * max(gap, 2 * noise)
    thr = Thresholds(
        replay_margin=margin,
        waveform_max_abs=max(CALIBRATION_MARGIN * max_abs, 1e-9),
        waveform_rel_l2=max(CALIBRATION_MARGIN * rel, 1e-9),
    )
    comp_thr, _ = calibrate(
        [(cand(k, "repeat"), cand(k, s)) for k in tasks if not held(k) for s in sources if s != "repeat"], Thresholds()
    )
    # --- held out: the rule itself on every honest candidate and every cheat
    honest: list[tuple[str, tuple, ReplayDecision, bool]] = []
    cheats: list[tuple[str, ReplayDecision]] = []
    decisions: dict[tuple, ReplayDecision] = {}
    other_cfg = next((c for c in configs if c != cfg), None)
    for key in [k for k in tasks if held(k)]:
        p, s = key
        ref = cand(key, "repeat")
        for source in sources:
            c = cand(key, source)
            d = decisions[(key, source)] = v.decide(doc(key), c, thr)
            differ = not np.array_equal(np.asarray(c.arrays["codes"]), np.asarray(ref.arrays["codes"]))
            honest.append((source, key, d, differ))
        seeds = sorted({k[1] for k in tasks})
        other = cand((p, seeds[(seeds.index(s) + 1) % len(seeds)]), "repeat")
        rate = ref.sampling_rate or 1
        codes = np.asarray(ref.arrays["codes"])
        k = max(1, codes.shape[0] // 2)
        t2 = cand(key, "threads")
        made = {
            "another seed": other,
            "another prompt": cand(((p + 1) % len(settings.prompts), s), "repeat"),
            "a code forced at a confident position": _forced_code(v, doc(key), ref),
            "partial re-generation from the middle": v.decoded(
                doc(key), np.concatenate([codes[:k], np.asarray(other.arrays["codes"])[k : codes.shape[0]]]), rate
            ),
            "truncated (4 frames dropped)": v.decoded(doc(key), codes[:-4], rate),
            "honest codes, edited waveform": _comparable(
                _edit(np.asarray(t2.arrays["waveform"]), EDIT_BOUNDS * thr.waveform_max_abs, 1000 * p + s),
                np.asarray(t2.arrays["codes"]),
                rate,
            ),
        }
        if other_cfg is not None:
            made[f"{other_cfg[0]} passed off as {dtype}"] = runs[(other_cfg, key, "t1")]
        for what, c in made.items():
            cheats.append((what, v.decide(doc(key), c, thr)))
    hd = [d for _, _, d, _ in honest]
    frr = wilson(sum(d.accepted is not True for d in hd), len(hd))
    differ = [d for _, _, d, x in honest if x]
    frr_d = wilson(sum(d.accepted is not True for d in differ), len(differ))
    counted = [(w, d) for w, d in cheats if w not in NOT_COUNTED]
    far = wilson(sum(d.accepted is True for _, d in counted), len(counted))
    by_source = {}
    for source in sources:
        ds = [(d, x) for s_, _, d, x in honest if s_ == source]
        by_source[source] = {
            "candidates": len(ds),
            "rejected": sum(d.accepted is not True for d, _ in ds),
            "codes_differ": sum(x for _, x in ds),
            "flips": sum(d.flips for d, _ in ds if d.accepted),
            "largest_gap": max((d.max_gap or 0.0 for d, _ in ds if d.accepted), default=0.0),
        }
    by_cheat = {}
    for what in dict.fromkeys(w for w, _ in cheats):
        ds = [d for w, d in cheats if w == what]
        by_cheat[what] = {
            "candidates": len(ds),
            "accepted": sum(d.accepted is True for d in ds),
            "example": next((d.reason for d in ds if d.accepted is not True), ds[0].reason if ds else ""),
            "counted": what not in NOT_COUNTED,
        }
    h_scores, c_scores = [_score(d, thr) for d in hd], [_score(d, thr) for _, d in counted]
    det = _det(h_scores, c_scores)
    # --- the fleet: native and avx2 executions of each held-out task
    fleet: dict[str, dict[str, Any]] = {}
    if "isa:avx2" in sources:
        outcomes = []
        for key in [k for k in tasks if held(k)]:
            a, b = cand(key, "repeat"), cand(key, "isa:avx2")
            ra, rb = decisions[(key, "repeat")].accepted is True, decisions[(key, "isa:avx2")].accepted is True
            outcomes.append(
                {
                    ("native", "native"): {"result_hash": True, "composite": True, "replay": ra},
                    ("avx2", "avx2"): {"result_hash": True, "composite": True, "replay": rb},
                    ("native", "avx2"): {
                        "result_hash": result_hash(a, b),
                        "composite": composite(a, b, comp_thr),
                        "replay": ra and rb,
                    },
                }
            )
        est = simulate(outcomes, FLEET, RULES, assume_within=False)
        fleet = {
            rule: {"p_accepted": r.p2of3, "p_aborted": r.p_aborted, "invalidated": r.wrongly_slashed, "p3of3": r.p3of3}
            for rule, r in est.rules.items()
        }
        fleet["tasks"] = {
            "count": len(outcomes),
            "codes_differ": sum(
                not np.array_equal(
                    np.asarray(cand(k, "repeat").arrays["codes"]), np.asarray(cand(k, "isa:avx2").arrays["codes"])
                )
                for k in tasks
                if held(k)
            ),
        }
    return ConfigStudy(
        dtype=dtype,
        quantize_bits=bits,
        margin=margin,
        waveform_max_abs=thr.waveform_max_abs,
        waveform_rel_l2=thr.waveform_rel_l2,
        honest_max_gap=gap,
        one_pass_noise=noise,
        frr=frr,
        frr_codes_differ=frr_d,
        far=far,
        by_source=by_source,
        by_cheat=by_cheat,
        det=det,
        fleet=fleet,
        honest_scores=[x if math.isfinite(x) else None for x in h_scores],
        cheat_scores=[x if math.isfinite(x) else None for x in c_scores],
        rejected_honest=[f"{s_} {k}: {d.reason}" for s_, k, d, _ in honest if d.accepted is not True],
        accepted_cheats=[f"{w}: {d.reason}" for w, d in counted if d.accepted is True],
        composite_bounds=(comp_thr.waveform_max_abs, comp_thr.waveform_rel_l2),
    )


def _calibration(
    settings: ReplayStudySettings, studies: list[ConfigStudy], classes: list[str], levels: list[str]
) -> Calibration:
    from harness import __version__
    from harness.models.tiny import tiny_info

    model = settings.model
    weights = tiny_info(model.split(":", 1)[1])["weights_sha256"] if model.startswith("tiny:") else None
    entries = []
    for c in studies:
        scope = Scope(
            kind="audio",
            model=model,
            weights_sha256=weights,
            dtype=c.dtype,
            quantize_bits=c.quantize_bits,
            new_tokens=(settings.max_new_tokens, settings.max_new_tokens),
            sources=["repeat", "process", "threads", *(["isa"] if levels else [])],
            kernel_classes=classes,
            harness_version=__version__,
        )
        entries.append(
            Entry(
                scope=scope,
                waveform_max_abs=c.waveform_max_abs,
                waveform_rel_l2=c.waveform_rel_l2,
                false_reject=c.frr,
                false_accept=c.far,
                replay_margin=c.margin,
                notes=[
                    f"held-out FRR where honest codes differ: {c.frr_codes_differ.errors}/{c.frr_codes_differ.pairs}"
                ],
            )
        )
    made_by = (
        f"harness replay-study: {settings.seeds} seeds x {len(settings.prompts)} prompts, "
        f"{settings.max_new_tokens} tokens, kernel levels native{''.join(', ' + lv for lv in levels)}; "
        f"held-out half (odd seeds)"
    )
    return Calibration(rule="replay", made_by=made_by, entries=entries).sealed()


def _summary(studies: list[ConfigStudy]) -> str:
    parts = []
    for c in studies:
        f = c.fleet
        if not f:
            continue
        parts.append(
            f"{c.dtype}: under replay P(accepted) {f['replay']['p_accepted']:.2f}, invalidated "
            f"{f['replay']['invalidated']:.1%}; composite invalidates {f['composite']['invalidated']:.1%} "
            f"and result_hash {f['result_hash']['invalidated']:.1%} of honest executions"
        )
    if not parts:
        return "no AVX2 level on this machine: no mixed-fleet figures"
    needs = any(c.fleet and c.fleet["composite"]["invalidated"] > 0 for c in studies)
    head = (
        "a mixed CPU fleet (half native, half AVX2 kernels) needs replay"
        if needs
        else "a mixed CPU fleet (half native, half AVX2 kernels) kept equal codes here: composite suffices"
    )
    return head + "; " + "; ".join(parts)


def plot_det(result: ReplayStudyResult, path: Path) -> Path:
    """Left: FRR against FAR as the threshold scale sweeps (log axes, 0 drawn at 1e-3), per
    dtype. Right: why, the held-out scores (accepted iff <= 1) of honest candidates and cheats."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.store.run import atomic_write_bytes

    floor, ceiling = 1e-3, 1e6
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.8), dpi=110)
    for i, c in enumerate(result.configs):
        far = np.maximum(c.det["far"], floor)
        frr = np.maximum(c.det["frr"], floor)
        (line,) = ax.step(far, frr, where="post", label=f"{c.dtype} (margin {c.margin:.2g})")
        op = c.det["operating"]
        ax.plot(max(op[1], floor), max(op[0], floor), "o", color=line.get_color(), markersize=8)
        for j, (scores, marker, what) in enumerate(((c.honest_scores, "o", "honest"), (c.cheat_scores, "x", "cheats"))):
            xs = np.array([ceiling if x is None else max(x, 1e-6) for x in scores], dtype=float)
            ys = np.full(xs.shape, 2 * i + j) + np.random.default_rng(i * 2 + j).uniform(-0.25, 0.25, xs.shape)
            bx.scatter(xs, ys, marker=marker, s=18, color=line.get_color(), alpha=0.7, label=f"{c.dtype} {what}")
    det_frame(
        ax,
        floor,
        "candidates",
        "DET: one scale over margin and decoder bounds\n(dots: operating points; 0 drawn at 1e-3)",
        fontsize=9,
    )
    ax.legend(loc="upper right", fontsize=8)
    bx.axvline(1.0, color="k", lw=1, ls="--")
    bx.set_xscale("log")
    bx.set_xlim(1e-6 * 0.5, ceiling * 2)
    bx.set_yticks(range(2 * len(result.configs)))
    bx.set_yticklabels([f"{c.dtype} {w}" for c in result.configs for w in ("honest", "cheats")], fontsize=8)
    bx.set_xlabel(
        "score = max(gap / margin, waveform distance / decoder bound); accepted iff <= 1\n"
        "(0 drawn at 1e-6; an impossible token, a wrong length or shape at 1e6)",
        fontsize=8,
    )
    bx.set_title("Held-out scores", fontsize=9)
    fig.suptitle("Replay rule on tiny MusicGen, held out", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path
