"""Measure the candidate audio validators on real (tiny) MusicGen outputs, calibrate the
composite rule on one half of the tasks and report its error rates on the other half.

A validator is worth two numbers: how often it rejects an honest node whose hardware
differs (false reject rate, FRR) and how often it accepts a dishonest one (false accept
rate, FAR). Both are measured here on outputs of the tiny MusicGen model generated in this
process with harness.execution.execute (the same call a node makes), over several prompts and seeds.

Honest pairs: the same task (prompt, seed, float32) under conditions that are honestly
different: thread count 1 vs 2 (another CPU or GPU reduces floats in another order), a
repeat in the same process, and (full study) a second worker process (threads=1), alone
and combined with the thread difference. Batch size is left out on purpose: a sampled task in a batch draws other
random numbers and diverges by design (the network runs one task per pass). A lower dtype
is not honest either: it is the cheat "lower precision passed off as float32".

Cheats, each claiming to be the float32 task: another seed and another prompt (real engine
outputs); a real bfloat16 run; the clip truncated (10% and 50% cut); Gaussian noise at
40/30/20/10 dB SNR; a time shift of 1 and 10 ms; and the cheats aimed at the composite rule
(codes equal AND waveform within calibrated bounds): noise at 30 dB with the honest codes
kept; the honest codes with the waveform rounded through bfloat16 (a lower-precision
decode); low-amplitude edits 2x and 10x the largest honest max-abs of the calibration half,
honest codes kept; another seed's codes sent with the honest waveform; a partial
re-generation from step k (honest codes up to k, another seed's after, waveform spliced at
the same point). Waveform edits start from the threads=2 output (the cheater runs other
hardware) and otherwise drop the codes. Every candidate is compared against the threads=1
reference output.

Calibration (held out): tasks with an even seed index calibrate, the others are judged. The
composite rule's bounds are the largest honest max-abs and rel-L2 of the calibration half
times ``CALIBRATION_MARGIN``. Every rate in the table is measured on the held-out half only.
The thresholded rules (tolerance, perceptual, composite) also get their DET curve: FRR
against FAR as the threshold sweeps, with the operating point marked.

The recommendation is the rule with FRR <= 1% and FAR <= 1% held out (lowest FRR + FAR);
when none gets there, it says so.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.studies import StudyResult, StudySettings
from harness.compare.levels import Comparable, Thresholds, float_metrics, length_mismatch
from harness.compare.validators import (
    VALIDATORS,
    add_noise,
    error_rates,
    lower_precision,
    time_shift,
    truncate,
    with_waveform,
)
from harness.digests import digest_array
from harness.hubenv import apply_library_env

GENERATION = {"do_sample": True, "top_k": 250, "top_p": 1.0, "temperature": 1.0, "guidance_scale": 3.0}
NOISE_SNR_DB = (40.0, 30.0, 20.0, 10.0)
SHIFT_MS = (1.0, 10.0)
TRUNCATE = (0.1, 0.5)


QUICK = StudySettings(seeds=2, max_new_tokens=24, processes=False)
FULL = StudySettings()


# --- generation ------------------------------------------------------------------------------------


def task_doc(settings: StudySettings, prompt: int, seed: int, dtype: str = "float32") -> dict[str, Any]:
    return {
        "model": settings.model,
        "prompt": settings.prompts[prompt],
        "seed": seed,
        "dtype": dtype,
        "quantize_bits": None,
        "generation_config": {**GENERATION, "max_new_tokens": settings.max_new_tokens},
    }


def generate(docs: list[tuple[dict[str, Any], int]]) -> list[Comparable]:
    """Run each (task doc, threads) here, in order; torch's thread count is restored after."""
    from harness.determinism import apply_environment

    if "torch" not in sys.modules:
        apply_environment("on")
    import torch

    from harness.engines.base import ModelCache
    from harness.execution.execute import execute
    from harness.spec.tasks import parse_task

    before = torch.get_num_threads()
    cache = ModelCache()
    out = []
    try:
        for doc, threads in docs:
            ex = execute(parse_task(doc, "audio"), "audio", "cpu", cache, threads=threads)
            out.append(_comparable(ex.output.arrays["waveform"], ex.output.arrays["codes"], ex.output.sampling_rate))
    finally:
        torch.set_num_threads(before)
    return out


def _comparable(waveform: np.ndarray, codes: np.ndarray, rate: int) -> Comparable:
    arrays = {"waveform": np.asarray(waveform, np.float32), "codes": np.asarray(codes, np.int64)}
    digests = {k: digest_array(v) for k, v in arrays.items()}
    digests.update(output=digests["waveform"], tokens=digests["codes"])
    return Comparable(arrays=arrays, digests=digests, discrete="codes", steps="codes", sampling_rate=int(rate))


def _start_worker(
    docs: list[tuple[dict[str, Any], int]], folder: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen:
    """A fresh worker process for ``docs``; ``extra_env`` is set before its torch starts
    (a CPU kernel level's caps, harness.isa)."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = folder / "jobs.json"
    jobs.write_text(json.dumps([[d, t] for d, t in docs]))
    env = dict(os.environ)
    apply_library_env(env)
    env.update(extra_env or {})
    with open(folder / "worker.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "harness.workflows.validator_study", "--worker", str(jobs), str(folder / "out.npz")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )


def _collect_worker(proc: subprocess.Popen, folder: Path, timeout: float = 600) -> list[Comparable]:
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"validator study worker timed out after {timeout:.0f} s") from None
    if code != 0:
        tail = (folder / "worker.log").read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise RuntimeError(f"validator study worker exited with code {code}: {tail[0]}")
    with np.load(folder / "out.npz", allow_pickle=False) as npz:
        n = int(npz["count"])
        return [_comparable(npz[f"waveform_{i}"], npz[f"codes_{i}"], int(npz[f"rate_{i}"])) for i in range(n)]


def _worker_main(jobs_path: str, out_path: str) -> int:
    docs = [(d, int(t)) for d, t in json.loads(Path(jobs_path).read_text())]
    outs = generate(docs)
    from harness.execution.env import kernels_in_force

    arrays: dict[str, np.ndarray] = {
        "count": np.array(len(outs)),
        "kernel_class": np.array(kernels_in_force()["class"]),
    }
    for i, c in enumerate(outs):
        arrays[f"waveform_{i}"] = np.asarray(c.arrays["waveform"])
        arrays[f"codes_{i}"] = np.asarray(c.arrays["codes"])
        arrays[f"rate_{i}"] = np.array(c.sampling_rate)
    np.savez(out_path, **arrays)
    return 0


# --- the study ---------------------------------------------------------------------------------------

HONEST_PAIRS = (  # (a, b, condition) over one task's honest executions
    ("t1", "t2", "threads"),
    ("t1", "t1_again", "repeat"),
    ("t1_again", "t2", "threads"),
    ("t1", "proc_t1", "process"),
    ("t1_again", "proc_t1", "process"),
    ("t2", "proc_t1", "threads+process"),
)
#: composite bounds = the largest honest spread of the calibration half times this margin
CALIBRATION_MARGIN = 2.0
#: low-amplitude edits, as multiples of the calibration half's largest honest max-abs
EDIT_SPREADS = (3.0, 10.0)
PARTIAL_FROM = (0.25, 0.5)  # re-generated from this fraction of the steps on
THRESHOLDED = ("tolerance", "perceptual", "composite")
Labelled = tuple[str, tuple[int, int], Comparable, Comparable]


def calibrate(
    honest: list[tuple[Comparable, Comparable]], base: Thresholds, margin: float = CALIBRATION_MARGIN
) -> tuple[Thresholds, dict[str, float]]:
    """Composite bounds from honest pairs with equal codes: largest max-abs and rel-L2 times
    ``margin`` (a bitwise-only honest half gives zero bounds: only bitwise then passes)."""
    max_abs = rel = 0.0
    for a, b in honest:
        m = float_metrics(a.arrays["waveform"], b.arrays["waveform"])
        if m.get("max_abs") is not None and a.digests.get("codes") == b.digests.get("codes"):
            max_abs, rel = max(max_abs, m["max_abs"]), max(rel, m["rel_l2"])
    thr = base.model_copy(update={"waveform_max_abs": max_abs * margin, "waveform_rel_l2": rel * margin})
    return thr, {"honest_max_abs": max_abs, "honest_max_rel_l2": rel, "margin": margin}


def _edit(wav: np.ndarray, amplitude: float, seed: int) -> np.ndarray:
    """A low-amplitude edit: uniform noise with max-abs ``amplitude`` (a quiet overdub)."""
    noise = np.random.default_rng(seed).uniform(-1.0, 1.0, size=np.shape(wav)).astype(np.float64)
    noise *= amplitude / max(float(np.max(np.abs(noise))), 1e-30)
    return (np.asarray(wav, np.float64) + noise).astype(np.float32)


def _splice(honest: Comparable, other: Comparable, fraction: float) -> Comparable:
    """Honest codes up to step k, another run's after; the waveform spliced at the same place."""
    ca, cb = np.asarray(honest.arrays["codes"]), np.asarray(other.arrays["codes"])
    k = max(1, int(round(ca.shape[0] * fraction)))
    codes = np.concatenate([ca[:k], cb[k : ca.shape[0]]]) if cb.shape[0] >= ca.shape[0] else ca.copy()
    wa, wb = np.asarray(honest.arrays["waveform"]), np.asarray(other.arrays["waveform"])
    cut = int(round(wa.shape[0] * k / ca.shape[0]))
    wav = np.concatenate([wa[:cut], wb[cut : wa.shape[0]]]) if wb.shape[0] >= wa.shape[0] else wa.copy()
    return _comparable(wav, codes, honest.sampling_rate or 1)


def run_study(settings: StudySettings = FULL, thresholds: Thresholds | None = None) -> StudyResult:
    start = time.perf_counter()
    seeds = list(range(settings.seeds))
    tasks = [(p, s) for p in range(len(settings.prompts)) for s in seeds]
    if settings.seeds < 2 or len(settings.prompts) < 2:
        raise ValueError("the study needs at least 2 seeds and 2 prompts (for the other-seed/other-prompt cheats)")
    main_jobs: list[tuple[str, tuple[int, int]]] = []
    for key in tasks:
        main_jobs += [("t1", key), ("t2", key), ("t1_again", key), ("bf16", key)]
    # all threads=1 work first, then threads=2: switching the thread pool back and forth is
    # slow (10x on a busy 2-core machine), and the order does not change any output
    main_jobs.sort(key=lambda job: job[0] == "t2")
    docs = [
        (task_doc(settings, p, s, "bfloat16" if name == "bf16" else "float32"), 2 if name == "t2" else 1)
        for name, (p, s) in main_jobs
    ]
    runs: dict[tuple[str, tuple[int, int]], Comparable] = dict(zip(main_jobs, generate(docs), strict=False))
    if settings.processes:  # after the main work, so the two processes do not fight over the cores
        worker_jobs = [("proc_t1", key) for key in tasks]
        with tempfile.TemporaryDirectory(prefix="harness-validators-") as tmp:
            proc = _start_worker([(task_doc(settings, p, s), 1) for _, (p, s) in worker_jobs], Path(tmp))
            runs.update(zip(worker_jobs, _collect_worker(proc, Path(tmp)), strict=False))
    honest: list[Labelled] = []
    for p, s in tasks:
        have = {name for name, key in runs if key == (p, s)}
        for a, b, condition in HONEST_PAIRS:
            if a in have and b in have:
                honest.append((condition, (p, s), runs[(a, (p, s))], runs[(b, (p, s))]))
    held = {(p, s) for p, s in tasks if seeds.index(s) % 2 == 1}
    base = thresholds or Thresholds()
    thr, calibration = calibrate([(a, b) for _, key, a, b in honest if key not in held], base)
    spread = calibration["honest_max_abs"]
    cheats: list[Labelled] = []
    for p, s in tasks:
        ref, t2 = runs[("t1", (p, s))], runs[("t2", (p, s))]
        wav, rate = t2.arrays["waveform"], t2.sampling_rate or 1
        other = runs[("t1", (p, seeds[(seeds.index(s) + 1) % len(seeds)]))]
        other_prompt = (p + 1) % len(settings.prompts)
        noise_seed = 1000 * p + s
        made = [
            ("another seed", other),
            ("another prompt", runs[("t1", (other_prompt, s))]),
            ("bfloat16 passed off as float32", runs[("bf16", (p, s))]),
            *[(f"truncated {int(f * 100)}%", with_waveform(t2, truncate(wav, f))) for f in TRUNCATE],
            *[
                (f"noise {snr:g} dB SNR", with_waveform(t2, add_noise(wav, snr, seed=noise_seed)))
                for snr in NOISE_SNR_DB
            ],
            *[
                (f"time shift {ms:g} ms", with_waveform(t2, time_shift(wav, int(round(ms * rate / 1000)))))
                for ms in SHIFT_MS
            ],
            (
                "noise 30 dB, honest codes kept",
                with_waveform(t2, add_noise(wav, 30.0, seed=noise_seed), keep_codes=True),
            ),
            (
                "honest codes, waveform rounded through bfloat16",
                with_waveform(t2, lower_precision(wav, "bfloat16"), keep_codes=True),
            ),
            *[
                (
                    f"edit {k:g}x the honest spread, honest codes kept",
                    with_waveform(t2, _edit(wav, max(spread, 1e-9) * k, noise_seed), keep_codes=True),
                )
                for k in EDIT_SPREADS
            ],
            ("another seed's codes, honest waveform", _comparable(wav, other.arrays["codes"], rate)),
            *[(f"re-generated from step {int(f * 100)}%", _splice(t2, other, f)) for f in PARTIAL_FROM],
        ]
        cheats += [(kind, (p, s), ref, cand) for kind, cand in made]
    honest_held = [(k, a, b) for k, key, a, b in honest if key in held]
    cheats_held = [(k, a, b) for k, key, a, b in cheats if key in held]
    table = error_rates([(a, b) for _, a, b in honest_held], [(a, b) for _, a, b in cheats_held], thresholds=thr)
    table.insert(3, "false_rejects", [round(r * len(honest_held)) for r in table["false_reject_rate"]])
    table.insert(4, "false_accepts", [round(r * len(cheats_held)) for r in table["false_accept_rate"]])
    result = StudyResult(
        settings=settings,
        table=table,
        honest_by_kind=_by_kind(honest_held, thr, reject=True),
        cheats_by_kind=_by_kind(cheats_held, thr, reject=False),
        recommendation=recommend(table),
        seconds=time.perf_counter() - start,
        generations=len(runs),
        thresholds=thr,
        calibration=calibration,
        det=det_curves(honest_held, cheats_held, thr),
    )
    if not settings.processes:
        result.notes.append("quick study: no second worker process (process pairs left out)")
    return result


# --- DET curves -------------------------------------------------------------------------------------


def rule_score(rule: str, a: Comparable, b: Comparable, thr: Thresholds) -> float:
    """A score that the rule accepts when <= 1 at the thresholds ``thr`` (its operating
    point); scaling the threshold by t accepts score <= t. Infinite: never accepted."""
    if a.digests.get("waveform") is not None and a.digests.get("waveform") == b.digests.get("waveform"):
        return 0.0
    if rule == "perceptual":
        from harness.compare.levels import fingerprint_distance

        d = fingerprint_distance(a, b, thr.fingerprint_bits)
        return math.inf if d is None else d / max(thr.hamming_max, 1)
    m = float_metrics(a.arrays["waveform"], b.arrays["waveform"])
    if m.get("rel_l2") is None:
        return math.inf
    if rule == "tolerance":
        if length_mismatch(m) > thr.max_length_mismatch:
            return math.inf
        return max(m["rel_l2"] / thr.rel_l2_max, (1 - m["cosine"]) / max(1 - thr.cosine_min, 1e-12))
    if rule == "composite":
        if a.digests.get("codes") != b.digests.get("codes") or m["length_a"] != m["length_b"]:
            return math.inf
        return max(m["max_abs"] / max(thr.waveform_max_abs, 1e-30), m["rel_l2"] / max(thr.waveform_rel_l2, 1e-30))
    raise ValueError(f"no score for rule {rule!r}")


def det_curves(
    honest: list[tuple[str, Comparable, Comparable]], cheats: list[tuple[str, Comparable, Comparable]], thr: Thresholds
) -> dict[str, dict[str, list[float]]]:
    """Per thresholded rule: FRR and FAR at every distinct score (threshold scale), plus the
    operating point (scale 1)."""
    out: dict[str, dict[str, list[float]]] = {}
    for rule in THRESHOLDED:
        hs = np.array([rule_score(rule, a, b, thr) for _, a, b in honest])
        cs = np.array([rule_score(rule, a, b, thr) for _, a, b in cheats])
        finite = np.concatenate([hs, cs])
        points = np.unique(np.concatenate([[0.0], finite[np.isfinite(finite)], [1.0]]))
        frr = [float(np.mean(hs > t)) if hs.size else 0.0 for t in points]
        far = [float(np.mean(cs <= t)) if cs.size else 0.0 for t in points]
        out[rule] = {
            "threshold": points.tolist(),
            "frr": frr,
            "far": far,
            "operating": [float(np.mean(hs > 1.0)) if hs.size else 0.0, float(np.mean(cs <= 1.0)) if cs.size else 0.0],
        }
    return out


def det_frame(ax, floor: float, honest: str, title: str, fontsize: int = 10) -> None:
    """A DET plot's frame, shared by the validator and replay studies: log axes from ``floor``,
    the 1% goal lines, the axis labels and the title."""
    ax.axvline(0.01, color="grey", lw=0.8, ls="--")
    ax.axhline(0.01, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor * 0.8, 1.1)
    ax.set_ylim(floor * 0.8, 1.1)
    ax.set_xlabel("false accept rate (held-out cheats)")
    ax.set_ylabel(f"false reject rate (held-out honest {honest})")
    ax.set_title(title, fontsize=fontsize)


def plot_det(result: StudyResult, path: Path) -> Path:
    """The DET plot (FRR against FAR, both on a log scale clipped at 1e-3) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-3
    fig, ax = plt.subplots(figsize=(6, 5), dpi=110)
    for rule, curve in result.det.items():
        far = np.maximum(curve["far"], floor)
        frr = np.maximum(curve["frr"], floor)
        (line,) = ax.step(far, frr, where="post", label=rule)
        op = curve["operating"]
        ax.plot(max(op[1], floor), max(op[0], floor), "o", color=line.get_color(), markersize=8)
    det_frame(ax, floor, "pairs", "Audio validators, held out: DET curves\n(dots: operating points; 0 drawn at 1e-3)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    import io

    from harness.store.run import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _by_kind(pairs: list[tuple[str, Comparable, Comparable]], thr: Thresholds, reject: bool) -> pd.DataFrame:
    kinds = list(dict.fromkeys(k for k, _, _ in pairs))
    rows = []
    for kind in kinds:
        sub = [(a, b) for k, a, b in pairs if k == kind]
        row: dict[str, Any] = {"condition" if reject else "cheat": kind, "pairs": len(sub)}
        for name, fn in VALIDATORS.items():
            hits = sum((not fn(a, b, thr)) if reject else bool(fn(a, b, thr)) for a, b in sub)
            row[name] = hits / len(sub)
        rows.append(row)
    return pd.DataFrame(rows)


def recommend(table: pd.DataFrame) -> str:
    """The rule with FRR <= 1% and FAR <= 1% (lowest sum, then lower FAR); else say none."""
    rows = list(table.itertuples(index=False))
    good = [r for r in rows if r.false_reject_rate <= 0.01 and r.false_accept_rate <= 0.01]
    pool = good or rows
    best = min(
        pool,
        key=lambda r: (
            round(r.false_reject_rate + r.false_accept_rate, 12),
            round(r.false_accept_rate, 12),
            rows.index(r),
        ),
    )
    if good:
        return (
            f"recommended: {best.validator} (held-out FRR {best.false_reject_rate:.3f}, FAR "
            f"{best.false_accept_rate:.3f}: both <= 1%)"
        )
    return (
        f"no rule reaches FRR <= 1% and FAR <= 1% held out; the lowest FRR + FAR is {best.validator} "
        f"(FRR {best.false_reject_rate:.3f}, FAR {best.false_accept_rate:.3f}); see the DET curves"
    )


if __name__ == "__main__":  # the second worker process of the study
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2], sys.argv[3]))
    print(
        "usage: python -m harness.workflows.validator_study --worker JOBS.json OUT.npz "
        "(internal; use `harness validators`)",
        file=sys.stderr,
    )
    sys.exit(2)
