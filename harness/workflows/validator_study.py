"""Measure the candidate audio validators on real (tiny) MusicGen outputs.

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

Cheats, each claiming to be the float32 task: another seed and another prompt (real
engine outputs); a real bfloat16 run; the clip truncated (10% and 50% cut); Gaussian noise
at 40/30/20/10 dB SNR; a time shift of 1 and 10 ms; and noise at 30 dB sent with the
honest codes kept (a node that edits audio but copies the codes: only a validator that
re-decodes the codes, or takes the audio from the codes, catches it). Waveform edits start
from the threads=2 output (the cheater runs other hardware) and otherwise drop the codes.
Every candidate is compared against the threads=1 reference output.

The recommendation is the validator with the lowest FRR + FAR, ties broken by FAR.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.compare.levels import Comparable, Thresholds
from harness.digests import digest_array
from harness.hubenv import apply_library_env
from harness.compare.validators import VALIDATORS, add_noise, error_rates, time_shift, truncate, with_waveform

PROMPTS = ("80s pop track with bassy drums and synth", "calm acoustic guitar with a soft piano melody")
GENERATION = {"do_sample": True, "top_k": 250, "top_p": 1.0, "temperature": 1.0, "guidance_scale": 3.0}
NOISE_SNR_DB = (40.0, 30.0, 20.0, 10.0)
SHIFT_MS = (1.0, 10.0)
TRUNCATE = (0.1, 0.5)


@dataclass(frozen=True)
class StudySettings:
    seeds: int = 20
    prompts: tuple[str, ...] = PROMPTS
    max_new_tokens: int = 32
    processes: bool = True  # honest pairs across a second worker process
    model: str = "tiny:musicgen"


QUICK = StudySettings(seeds=2, max_new_tokens=24, processes=False)
FULL = StudySettings()


@dataclass
class StudyResult:
    settings: StudySettings
    table: pd.DataFrame  # per validator: rates and counts
    honest_by_kind: pd.DataFrame  # reject rate per honest condition x validator
    cheats_by_kind: pd.DataFrame  # accept rate per cheat x validator
    recommendation: str
    seconds: float
    generations: int
    notes: list[str] = field(default_factory=list)


# --- generation ------------------------------------------------------------------------------------

def task_doc(settings: StudySettings, prompt: int, seed: int, dtype: str = "float32") -> dict[str, Any]:
    return {"model": settings.model, "prompt": settings.prompts[prompt], "seed": seed, "dtype": dtype,
            "quantize_bits": None, "generation_config": {**GENERATION, "max_new_tokens": settings.max_new_tokens}}


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


def _start_worker(docs: list[tuple[dict[str, Any], int]], folder: Path) -> subprocess.Popen:
    jobs = folder / "jobs.json"
    jobs.write_text(json.dumps([[d, t] for d, t in docs]))
    env = dict(os.environ)
    apply_library_env(env)
    with open(folder / "worker.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "harness.workflows.validator_study", "--worker", str(jobs),
                                 str(folder / "out.npz")], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=log, env=env)


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
    arrays: dict[str, np.ndarray] = {"count": np.array(len(outs))}
    for i, c in enumerate(outs):
        arrays[f"waveform_{i}"] = np.asarray(c.arrays["waveform"])
        arrays[f"codes_{i}"] = np.asarray(c.arrays["codes"])
        arrays[f"rate_{i}"] = np.array(c.sampling_rate)
    np.savez(out_path, **arrays)
    return 0


# --- the study ---------------------------------------------------------------------------------------

HONEST_PAIRS = (  # (a, b, condition) over one task's honest executions
    ("t1", "t2", "threads"), ("t1", "t1_again", "repeat"), ("t1_again", "t2", "threads"),
    ("t1", "proc_t1", "process"), ("t1_again", "proc_t1", "process"), ("t2", "proc_t1", "threads+process"),
)


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
    docs = [(task_doc(settings, p, s, "bfloat16" if name == "bf16" else "float32"), 2 if name == "t2" else 1)
            for name, (p, s) in main_jobs]
    runs: dict[tuple[str, tuple[int, int]], Comparable] = dict(zip(main_jobs, generate(docs)))
    if settings.processes:  # after the main work, so the two processes do not fight over the cores
        worker_jobs = [("proc_t1", key) for key in tasks]
        with tempfile.TemporaryDirectory(prefix="harness-validators-") as tmp:
            proc = _start_worker([(task_doc(settings, p, s), 1) for _, (p, s) in worker_jobs], Path(tmp))
            runs.update(zip(worker_jobs, _collect_worker(proc, Path(tmp))))
    honest: list[tuple[str, Comparable, Comparable]] = []
    cheats: list[tuple[str, Comparable, Comparable]] = []
    for p, s in tasks:
        have = {name for name, key in runs if key == (p, s)}
        for a, b, condition in HONEST_PAIRS:
            if a in have and b in have:
                honest.append((condition, runs[(a, (p, s))], runs[(b, (p, s))]))
        ref, base = runs[("t1", (p, s))], runs[("t2", (p, s))]
        wav, rate = base.arrays["waveform"], base.sampling_rate or 1
        other_seed = seeds[(seeds.index(s) + 1) % len(seeds)]
        other_prompt = (p + 1) % len(settings.prompts)
        noise_seed = 1000 * p + s
        cheats += [
            ("another seed", ref, runs[("t1", (p, other_seed))]),
            ("another prompt", ref, runs[("t1", (other_prompt, s))]),
            ("bfloat16 passed off as float32", ref, runs[("bf16", (p, s))]),
            *[(f"truncated {int(f * 100)}%", ref, with_waveform(base, truncate(wav, f))) for f in TRUNCATE],
            *[(f"noise {snr:g} dB SNR", ref, with_waveform(base, add_noise(wav, snr, seed=noise_seed)))
              for snr in NOISE_SNR_DB],
            *[(f"time shift {ms:g} ms", ref, with_waveform(base, time_shift(wav, int(round(ms * rate / 1000)))))
              for ms in SHIFT_MS],
            ("noise 30 dB, honest codes kept", ref,
             with_waveform(base, add_noise(wav, 30.0, seed=noise_seed), keep_codes=True)),
        ]
    thr = thresholds or Thresholds()
    table = error_rates([(a, b) for _, a, b in honest], [(a, b) for _, a, b in cheats], thresholds=thr)
    table.insert(3, "false_rejects", [round(r * len(honest)) for r in table["false_reject_rate"]])
    table.insert(4, "false_accepts", [round(r * len(cheats)) for r in table["false_accept_rate"]])
    result = StudyResult(
        settings=settings, table=table, honest_by_kind=_by_kind(honest, thr, reject=True),
        cheats_by_kind=_by_kind(cheats, thr, reject=False), recommendation=recommend(table),
        seconds=time.perf_counter() - start, generations=len(runs))
    if not settings.processes:
        result.notes.append("quick study: no second worker process (process pairs left out)")
    return result


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
    """The validator with the lowest FRR + FAR (ties: lower FAR, then table order)."""
    rows = list(table.itertuples(index=False))
    best = min(rows, key=lambda r: (round(r.false_reject_rate + r.false_accept_rate, 12),
                                    round(r.false_accept_rate, 12), rows.index(r)))
    return (f"recommended: {best.validator} (FRR {best.false_reject_rate:.3f} + FAR {best.false_accept_rate:.3f} "
            f"= {best.false_reject_rate + best.false_accept_rate:.3f}, the lowest; ties broken by FAR)")


if __name__ == "__main__":  # the second worker process of the study
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2], sys.argv[3]))
    print("usage: python -m harness.workflows.validator_study --worker JOBS.json OUT.npz (internal; use `harness validators`)",
          file=sys.stderr)
    sys.exit(2)
