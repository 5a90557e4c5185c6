"""Calibrate the composite audio rule per configuration, across CPU kernel sets, with a scope.

Why: bounds measured on float32 at one machine's kernels called an honest bfloat16 node on
another CPU a cheat. Here each configuration the smoke matrix runs (float32, bfloat16, 8-bit)
is calibrated on its own honest pairs, made in fresh worker processes at every kernel level
this CPU can give (harness.isa: native plus the emulated CPU kinds), so the spread between
thread counts under AVX2 kernels, say, is measured instead of assumed:

- ``threads``: 1 vs 2 threads, and ``repeat``: the same execution again, in each level's worker;
- ``process``: a second native worker process;
- ``isa``: each level's executions against native.

Cheats are those of harness.workflows.validator_study (another seed or prompt, edits with
the honest codes kept, truncation, partial re-generation, ...) against the native reference,
plus a lower precision passed off (bfloat16 for float32, and float32 for bfloat16: the
claimed dtype's output was not computed). Tasks with an even seed index calibrate, the
others are held out. A source whose held-out false reject is above 1% (bfloat16's codes change
across kernel sets: a codes-equal rule cannot accept those honest pairs) is left out of the
scope with the measured reason, and its pairs out of the bounds: outside the scope the
analysis decides nothing from this entry.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis.studies import PROMPTS
from harness.compare.levels import Comparable, Thresholds
from harness.compare.validators import composite
from harness.spec.calibration import Calibration, Entry, Rate, Scope
from harness.workflows.validator_study import (
    EDIT_SPREADS,
    GENERATION,
    _collect_worker,
    _comparable,
    _edit,
    _splice,
    _start_worker,
    calibrate,
)

MAX_FRR = 0.01
#: the smoke matrix's MusicGen configurations: (dtype, quantize_bits)
CONFIGS = (("float32", None), ("bfloat16", None), ("float32", 8))


@dataclass(frozen=True)
class CalibrationSettings:
    seeds: int = 6
    prompts: tuple[str, ...] = PROMPTS
    max_new_tokens: int = 64  # the smoke task's length
    model: str = "tiny:musicgen"
    configs: tuple[tuple[str, int | None], ...] = CONFIGS


def wilson(errors: int, pairs: int) -> Rate:
    from scipy.stats import binomtest

    if pairs == 0:
        return Rate(rate=0.0, low=0.0, high=1.0, errors=0, pairs=0)
    ci = binomtest(errors, pairs).proportion_ci(confidence_level=0.95, method="wilson")
    return Rate(rate=errors / pairs, low=float(ci.low), high=float(ci.high), errors=errors, pairs=pairs)


def _doc(settings: CalibrationSettings, prompt: int, seed: int, dtype: str, bits: int | None) -> dict[str, Any]:
    return {
        "model": settings.model,
        "prompt": settings.prompts[prompt],
        "seed": seed,
        "dtype": dtype,
        "quantize_bits": bits,
        "generation_config": {**GENERATION, "max_new_tokens": settings.max_new_tokens},
    }


def _run_worker(docs: list[tuple[dict[str, Any], int]], level: str, tmp: Path) -> tuple[list[Comparable], str]:
    from harness.isa import child_environment

    extra = child_environment(level)
    folder = tmp / f"{level}-{len(list(tmp.iterdir()))}"
    outs = _collect_worker(_start_worker(docs, folder, extra), folder)
    with np.load(folder / "out.npz", allow_pickle=False) as npz:
        return outs, str(npz["kernel_class"])


def _honest_and_cheats(
    settings: CalibrationSettings, dtype: str, bits: int | None, levels: list[str], tmp: Path
) -> tuple[list[tuple[str, int, Comparable, Comparable]], list[tuple[str, int, Comparable, Comparable]], set[str]]:
    tasks = [(p, s) for p in range(len(settings.prompts)) for s in range(settings.seeds)]
    other_dtype = "float32" if dtype == "bfloat16" else "bfloat16"
    runs: dict[tuple[str, str, tuple[int, int]], Comparable] = {}
    classes: set[str] = set()
    for level in levels:
        jobs = [(name, key) for key in tasks for name in ("t1", "t1_again")] + [("t2", key) for key in tasks]
        if level == "native":
            jobs += [("lower", key) for key in tasks]
        docs = [
            (
                _doc(settings, p, s, other_dtype if name == "lower" else dtype, None if name == "lower" else bits),
                2 if name == "t2" else 1,
            )
            for name, (p, s) in jobs
        ]
        outs, kclass = _run_worker(docs, level, tmp)
        classes.add(kclass)
        runs.update({(level, name, key): out for (name, key), out in zip(jobs, outs, strict=False)})
    outs, kclass = _run_worker([(_doc(settings, p, s, dtype, bits), 1) for p, s in tasks], "native", tmp)
    classes.add(kclass)
    runs.update({("native", "proc", key): out for key, out in zip(tasks, outs, strict=False)})
    honest: list[tuple[str, int, Comparable, Comparable]] = []
    cheats: list[tuple[str, int, Comparable, Comparable]] = []
    for p, s in tasks:
        key = (p, s)
        for level in levels:
            honest += [
                ("threads", s, runs[(level, "t1", key)], runs[(level, "t2", key)]),
                ("repeat", s, runs[(level, "t1", key)], runs[(level, "t1_again", key)]),
            ]
            if level != "native":
                honest += [
                    ("isa", s, runs[("native", "t1", key)], runs[(level, "t1", key)]),
                    ("isa", s, runs[("native", "t2", key)], runs[(level, "t2", key)]),
                ]
        honest.append(("process", s, runs[("native", "t1", key)], runs[("native", "proc", key)]))
        ref, t2 = runs[("native", "t1", key)], runs[("native", "t2", key)]
        other = runs[("native", "t1", (p, (s + 1) % settings.seeds))]
        wav = t2.arrays["waveform"]
        cheats += [
            (name, s, ref, cand)
            for name, cand in (
                ("another seed", other),
                ("another prompt", runs[("native", "t1", ((p + 1) % len(settings.prompts), s))]),
                (f"{other_dtype} passed off as {dtype}", runs[("native", "lower", key)]),
                (
                    "another seed's codes, honest waveform",
                    _comparable(wav, other.arrays["codes"], t2.sampling_rate or 1),
                ),
                *[(f"re-generated from step {int(f * 100)}%", _splice(t2, other, f)) for f in (0.25, 0.5)],
            )
        ]
    return honest, cheats, classes


def calibrate_config(
    settings: CalibrationSettings, dtype: str, bits: int | None, levels: list[str], tmp: Path
) -> Entry:
    from harness import __version__
    from harness.models.tiny import tiny_info

    honest, cheats, classes = _honest_and_cheats(settings, dtype, bits, levels, tmp)
    held = lambda seed: seed % 2 == 1
    base = Thresholds()
    notes: list[str] = []
    sources = []
    for source in ("repeat", "process", "threads", "isa"):
        pairs = [(a, b) for src, _, a, b in honest if src == source]
        if not pairs:
            continue
        # a source whose codes change cannot pass any codes-equal rule, whatever its bounds
        changed = sum(a.digests["codes"] != b.digests["codes"] for a, b in pairs)
        if changed:
            notes.append(
                f"{source}: codes differ in {changed} of {len(pairs)} honest pairs, so the composite rule "
                f"(codes equal) cannot accept them; {source} is outside this entry's scope"
            )
            continue
        sources.append(source)
    kept = [h for h in honest if h[0] in sources]
    thr, _ = calibrate([(a, b) for _, s, a, b in kept if not held(s)], base)
    # the low-amplitude edits scale with the honest spread measured on the calibration half
    spread = max(thr.waveform_max_abs / 2, 1e-9)
    for _, s, ref, t2 in [c for c in cheats if c[0] == "another seed"]:
        for k in EDIT_SPREADS:
            from harness.compare.validators import with_waveform

            cand = with_waveform(t2, _edit(t2.arrays["waveform"], spread * k, s), keep_codes=True)
            cheats.append((f"edit {k:g}x the honest spread, honest codes kept", s, ref, cand))
    hh = [(a, b) for _, s, a, b in kept if held(s)]
    ch = [(a, b) for _, s, a, b in cheats if held(s)]
    frr = wilson(sum(not composite(a, b, thr) for a, b in hh), len(hh))
    far = wilson(sum(bool(composite(a, b, thr)) for a, b in ch), len(ch))
    model = settings.model
    weights = tiny_info(model.split(":", 1)[1])["weights_sha256"] if model.startswith("tiny:") else None
    scope = Scope(
        kind="audio",
        model=model,
        weights_sha256=weights,
        dtype=dtype,
        quantize_bits=bits,
        new_tokens=(settings.max_new_tokens, settings.max_new_tokens),
        sources=sources,
        kernel_classes=sorted(classes),
        harness_version=__version__,
    )
    return Entry(
        scope=scope,
        waveform_max_abs=thr.waveform_max_abs,
        waveform_rel_l2=thr.waveform_rel_l2,
        false_reject=frr,
        false_accept=far,
        notes=notes,
    )


def run_calibration(settings: CalibrationSettings = CalibrationSettings()) -> Calibration:
    from harness.isa import ISA_NAMES, unavailable

    if settings.seeds < 2 or len(settings.prompts) < 2:
        raise ValueError("the calibration needs at least 2 seeds and 2 prompts")
    levels = [level for level in ISA_NAMES if unavailable(level) is None]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="harness-calibration-") as tmp:
        entries = [calibrate_config(settings, dtype, bits, levels, Path(tmp)) for dtype, bits in settings.configs]
    made_by = (
        f"harness validators --calibration: {settings.seeds} seeds x {len(settings.prompts)} prompts, "
        f"{settings.max_new_tokens} tokens, kernel levels {', '.join(levels)}; held-out half (odd seeds); "
        f"{time.perf_counter() - start:.0f} s"
    )
    return Calibration(made_by=made_by, entries=entries).sealed()
