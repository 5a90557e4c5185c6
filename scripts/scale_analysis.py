#!/usr/bin/env python
"""Does the analysis scale? Synthesize a large run directory, analyse and render it, and
measure time and peak memory; also measure the hashing throughput of digest_array.

    python scripts/scale_analysis.py                  # 100,000 records (500 configs x 200)
    python scripts/scale_analysis.py --configs 20     # smaller
    python scripts/scale_analysis.py --profile        # cProfile of analyze_run, top functions
    python scripts/scale_analysis.py --keep DIR       # keep the synthetic run in DIR

Targets: analysis + reports < 10 s and < 2 GiB peak RSS at 100k records; hashing >= 1 GB/s.

The synthetic run looks like a real one (records shaped like those the workers write, real
digests of real arrays) and has known answers, so tests/analysis/test_scale.py can check the analysis
against them. Per configuration: seeds x threads (1, 2) x batch (1, 2) x 2 workers x repeats.
Tasks alternate tiny MusicGen-like audio and GPT-like text, each in float32 and bfloat16:
  - audio: 2 threads keep the codes but change the floats (level "tokens", as measured on the
    CPU) -> ready_with_tolerance; every 5th audio task has worker 1 produce other codes for
    its first seed -> not_ready (process divergent);
  - text: bitwise across repeats, processes and threads -> ready;
  - batch 2 always gives other outputs (reported, not judged: verdict_dimensions exclude it);
  - every 50th configuration (the 8th, 58th, ...) has one cell that timed out -> failed.
Outputs with equal content share one small npz artifact (written once), so most comparisons
are settled by digests, and those that are not read a few kB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.digests import digest_array, digest_json  # noqa: E402

RATE = 32000
FRAMES = 50  # codes per audio output (50 Hz frame rate: 1 s), 4 codebooks
HOP = 64  # samples per frame in the synthetic waveform (3,200 samples, 0.1 s)
TEXT_TOKENS = 20
THREADS = (1, 2)
BATCHES = (1, 2)
WORKERS = 2
DTYPES = ("float32", "bfloat16")
VERDICT_DIMENSIONS = ["repeat", "process", "threads"]
ENVIRONMENT = {
    "hostname_hash": "000000000000",
    "os": "Linux-synthetic",
    "python": "3.11.0",
    "machine": "x86_64",
    "processor": "Synthetic CPU",
    "cpu_count": 2,
    "torch_threads": 2,
    "torch": "2.13.0+cpu",
    "cuda_available": False,
    "cuda_runtime": None,
    "cudnn": None,
    "gpu_names": [],
    "driver": None,
    "blas": "open",
    "libraries": {"torch": "2.13.0+cpu", "transformers": "5.23.0", "numpy": np.__version__},
}
DETERMINISM = {
    "deterministic_algorithms": True,
    "deterministic_warn_only": True,
    "cudnn_deterministic": True,
    "cudnn_benchmark": False,
    "cuda_matmul_allow_tf32": False,
    "cudnn_allow_tf32": False,
    "float32_matmul_precision": "highest",
    "num_threads": 1,
    "num_interop_threads": 2,
    "env": {"CUBLAS_WORKSPACE_CONFIG": ":16:8", "NVIDIA_TF32_OVERRIDE": "0"},
}


def _rng(*key: Any) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little"))


def _music(rng: np.random.Generator, samples: int) -> np.ndarray:
    """A few decaying tones of random pitch (different seeds are perceptually different)."""
    t = np.arange(samples) / RATE
    seconds = samples / RATE
    x = np.zeros(samples)
    for _ in range(6):
        f, on, amp = rng.uniform(80, 4000), rng.uniform(0, seconds), rng.uniform(0.05, 0.3)
        x += amp * np.sin(2 * np.pi * f * t) * np.exp(-((t - on) ** 2) / (0.05 * seconds))
    return x.astype(np.float32)[:, None]


class _Contents:
    """Arrays and digests per distinct output, each written once as an npz artifact."""

    def __init__(self, run: Path):
        self.run = run
        self.cache: dict[tuple, tuple[dict[str, str], str, dict[str, Any]]] = {}

    def _write(self, digests: dict[str, str], arrays: dict[str, np.ndarray]) -> str:
        rel = f"artifacts/c-{digests['output'][:20]}.npz"
        with open(self.run / rel, "wb") as fh:
            np.savez(fh, **arrays)
        return rel

    def audio(self, codes_key: tuple, threads: int) -> tuple[dict[str, str], str, dict[str, Any]]:
        key = ("audio", codes_key, threads)
        if key not in self.cache:
            rng = _rng(*codes_key)
            codes = rng.integers(0, 256, size=(FRAMES, 4), dtype=np.int64)
            wave = _music(rng, FRAMES * HOP)
            if threads != THREADS[0]:  # another thread count: same codes, last-bit float differences
                wave = (wave * np.float32(1 + 2e-7 * threads)).astype(np.float32)
            arrays = {"codes": codes, "waveform": wave}
            digests = {"codes": digest_array(codes), "waveform": digest_array(wave)}
            digests.update(output=digests["waveform"], tokens=digests["codes"])
            out = {
                "samples": wave.shape[0],
                "channels": 1,
                "audio_seconds": round(wave.shape[0] / RATE, 6),
                "sampling_rate": RATE,
                "discrete_shape": [FRAMES, 4],
                "new_tokens": FRAMES,
                "batch_size": 1,
                "generation_kwargs": {
                    "do_sample": True,
                    "top_k": 250,
                    "top_p": 1.0,
                    "temperature": 1.0,
                    "guidance_scale": 3.0,
                    "max_new_tokens": FRAMES,
                },
            }
            self.cache[key] = (digests, self._write(digests, arrays), out)
        return self.cache[key]

    def text(self, tokens_key: tuple) -> tuple[dict[str, str], str, dict[str, Any]]:
        key = ("text", tokens_key)
        if key not in self.cache:
            ids = _rng(*tokens_key).integers(0, 300, size=(1, TEXT_TOKENS), dtype=np.int64)
            response = {
                "model": "tiny:gpt2",
                "choices": [
                    {
                        "finish_reason": "length",
                        "index": 0,
                        "message": {"role": "assistant", "content": " ".join(f"w{t}" for t in ids[0])},
                    }
                ],
                "usage": {"prompt_tokens": 23, "completion_tokens": TEXT_TOKENS, "total_tokens": 23 + TEXT_TOKENS},
            }
            digests = {"token_ids": digest_array(ids), "response": digest_json(response)}
            digests.update(output=digests["response"], tokens=digests["token_ids"])
            out = {
                "new_tokens": TEXT_TOKENS,
                "discrete_shape": [1, TEXT_TOKENS],
                "batch_size": 1,
                "generation_kwargs": {"do_sample": True, "top_k": 20, "max_new_tokens": TEXT_TOKENS},
                "response": response,
            }
            self.cache[key] = (digests, self._write(digests, {"token_ids": ids}), out)
        return self.cache[key]


def _config_plan(index: int) -> dict[str, Any]:
    task_no, dtype = divmod(index, len(DTYPES))
    kind = "audio" if task_no % 2 == 0 else "gpt"
    task = f"{'musicgen' if kind == 'audio' else 'gpt'}-{task_no:04d}"
    not_ready = kind == "audio" and task_no % 10 == 4
    failed = index % 50 == 7
    verdict = (
        "failed" if failed else "not_ready" if not_ready else "ready_with_tolerance" if kind == "audio" else "ready"
    )
    return {
        "task": task,
        "kind": kind,
        "dtype": DTYPES[dtype],
        "not_ready": not_ready,
        "failed": failed,
        "verdict": verdict,
        "config_id": f"{task}/{DTYPES[dtype]}/qnone/cpu/pon",
    }


def synthesize_run(
    path: str | Path,
    configs: int = 500,
    seeds: int = 5,
    repeats: int = 5,
    created_at: float = 1.8e9,
    latency_scale: float = 1.0,
) -> dict[str, Any]:
    """Write a run directory with ``configs * seeds * 8 * repeats`` records (generation
    times multiplied by ``latency_scale``: a slower or faster run of the same cells).

    Returns the known answers: ``records``, ``artifacts``, ``expected`` (config_id ->
    verdict) and ``failed_cells``."""
    run = Path(path)
    (run / "artifacts").mkdir(parents=True, exist_ok=True)
    manifest = {
        "schema_version": 1,
        "harness_version": "0.1.0",
        "run_id": run.name,
        "created_at": created_at,
        "status": "complete",
        "devices": ["cpu"],
        "environment": ENVIRONMENT,
        "tiny_models": {},
        "matrix": {
            "spec": {
                "name": "synthetic-scale",
                "description": "synthetic run for scale tests",
                "thresholds": {"rel_l2_max": 0.1, "cosine_min": 0.99, "hamming_max": 8},
                "validators": {
                    "audio": {
                        "rule": "composite",
                        "false_accept": 0.0,
                        "false_reject": 0.0,
                        "pairs": 480,
                        "source": "harness validators (README)",
                    }
                },
                "gates": {"fail_on": ["not_ready", "failed"], "verdict_dimensions": VERDICT_DIMENSIONS},
            }
        },
    }
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    contents = _Contents(run)
    expected: dict[str, str] = {}
    records = failed_cells = 0
    clock = created_at
    with open(run / "results.jsonl", "w", encoding="utf-8") as fh:
        for index in range(configs):
            plan = _config_plan(index)
            expected[plan["config_id"]] = plan["verdict"]
            timing = _rng("timing", index)
            base_latency = 0.05 if plan["kind"] == "gpt" else 0.3
            for worker in range(WORKERS):
                loaded = False
                for s in range(seeds):
                    seed = 7 + 35 * s
                    for threads in THREADS:
                        for batch in BATCHES:
                            spec_hash = digest_json(
                                {
                                    "task": plan["task"],
                                    "dtype": plan["dtype"],
                                    "seed": seed,
                                    "threads": threads,
                                    "batch": batch,
                                }
                            )[:16]
                            for repeat in range(repeats):
                                cell_id = (
                                    f"{plan['task']}/{plan['dtype']}/qnone/seed{seed}/cpu/t{threads}/b{batch}/"
                                    f"pon/warm/w{worker}/r{repeat}"
                                )
                                axes = {
                                    "dtype": plan["dtype"],
                                    "quantize_bits": None,
                                    "seed": seed,
                                    "device": "cpu",
                                    "threads": threads,
                                    "batch_size": batch,
                                    "profile": "on",
                                    "repeat": repeat,
                                    "worker": worker,
                                }
                                rec: dict[str, Any] = {
                                    "schema_version": 1,
                                    "cell_id": cell_id,
                                    "spec_hash": spec_hash,
                                    "config_id": plan["config_id"],
                                    "task_name": plan["task"],
                                    "kind": plan["kind"],
                                    "model": "tiny:musicgen" if plan["kind"] == "audio" else "tiny:gpt2",
                                    "axes": axes,
                                    "lint": [],
                                    "worker_pid": 1000 + index * WORKERS + worker,
                                    "started_at": clock,
                                }
                                records += 1
                                clock += 0.1
                                if (
                                    plan["failed"]
                                    and worker == 1
                                    and s == 0
                                    and threads == 1
                                    and batch == 1
                                    and repeat == 0
                                ):
                                    failed_cells += 1
                                    rec.update(
                                        status="timeout",
                                        reason="timed out after 120 s; worker killed",
                                        finished_at=clock,
                                    )
                                    fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
                                    continue
                                flip = plan["not_ready"] and worker == 1 and s == 0
                                if plan["kind"] == "audio":
                                    digests, artifact, out = contents.audio(
                                        (plan["task"], plan["dtype"], seed, batch, flip), threads
                                    )
                                else:
                                    digests, artifact, out = contents.text((plan["task"], plan["dtype"], seed, batch))
                                gen = base_latency * (1 + 0.1 * timing.random()) * batch * latency_scale
                                load = 0.0 if loaded else 1.2 + 0.1 * timing.random()
                                loaded = True
                                timings = {"load_s": load, "encode_s": 0.0005, "generate_s": gen, "decode_s": 0.002}
                                if plan["kind"] == "gpt" and batch == 1:
                                    timings["time_to_first_token_s"] = 0.012
                                timings["total_s"] = load + gen + 0.0025
                                rec.update(
                                    status="ok",
                                    reason=None,
                                    digests=digests,
                                    artifact=artifact,
                                    timings=timings,
                                    peak_memory_bytes=400_000_000 + int(timing.integers(0, 30_000_000)),
                                    memory_kind="rss_peak",
                                    warnings=[],
                                    nondeterministic_warnings=[],
                                    output={**out, "batch_size": batch},
                                    model_meta={
                                        "model_path_source": "tiny",
                                        "weights_sha256": "0" * 64,
                                        "resolved_dtype": plan["dtype"],
                                        "quantization": {
                                            "bits": None,
                                            "backend": None,
                                            "quantized_layers": 0,
                                            "linear_layers": 0,
                                            "skipped_examples": [],
                                        },
                                    },
                                    determinism={**DETERMINISM, "num_threads": threads},
                                    finished_at=clock,
                                )
                                fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
    return {"records": records, "artifacts": len(contents.cache), "expected": expected, "failed_cells": failed_cells}


# --- measuring ------------------------------------------------------------------------------
def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def measure_analysis(run_dir: Path, profile: bool = False) -> dict[str, Any]:
    """Time load / analyse / render in this process (run it in a fresh one for peak RSS)."""
    from harness.analysis.run import analyze_run
    from harness.report.run import render_json, render_markdown
    from harness.store.run import RunStore

    figures: dict[str, Any] = {"rss_before_bytes": _peak_rss_bytes()}
    t0 = time.perf_counter()
    loaded = RunStore(run_dir).load_records()
    figures["load_records_s"] = time.perf_counter() - t0
    figures["records"] = len(loaded.records)
    del loaded
    if profile:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        t0 = time.perf_counter()
        analysis = prof.runcall(analyze_run, run_dir)
        figures["analyze_run_s_profiled"] = time.perf_counter() - t0
        for key in ("tottime", "cumulative"):
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(25)
            figures[f"profile_{key}"] = buf.getvalue()
    t0 = time.perf_counter()
    analysis = analyze_run(run_dir)
    figures["analyze_run_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    md = render_markdown(analysis)
    figures["render_markdown_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    js = render_json(analysis)
    figures["render_json_s"] = time.perf_counter() - t0
    figures["report_md_bytes"], figures["report_json_bytes"] = len(md.encode()), len(js.encode())
    figures["configs"] = len(analysis.configs)
    verdicts: dict[str, int] = {}
    for c in analysis.configs:
        verdicts[c.verdict] = verdicts.get(c.verdict, 0) + 1
    figures["verdicts"] = dict(sorted(verdicts.items()))
    figures["problems"] = len(analysis.problems)
    figures["peak_rss_bytes"] = _peak_rss_bytes()
    return figures


def measure_hashing(megabytes: int = 256, rounds: int = 3) -> dict[str, float]:
    """digest_array on a float32 array of ``megabytes`` MB (best of ``rounds``), next to a
    bare hashlib.sha256 over the same bytes: the ceiling on this machine."""
    arr = np.random.default_rng(0).standard_normal(megabytes * 1_000_000 // 4, dtype=np.float32)
    best = bare = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        digest_array(arr)
        best = min(best, time.perf_counter() - t0)
        t0 = time.perf_counter()
        hashlib.sha256(memoryview(arr).cast("B")).hexdigest()
        bare = min(bare, time.perf_counter() - t0)
    return {
        "bytes": arr.nbytes,
        "digest_array_gb_s": arr.nbytes / best / 1e9,
        "bare_sha256_gb_s": arr.nbytes / bare / 1e9,
        "digest_array_s": best,
    }


def _print_analysis(fig: dict[str, Any]) -> None:
    total = fig["analyze_run_s"] + fig["render_markdown_s"] + fig["render_json_s"]
    print(
        f"records                 {fig['records']:,}  ({fig['configs']} configs, verdicts {fig['verdicts']}, "
        f"problems {fig['problems']})"
    )
    print(f"load_records            {fig['load_records_s']:.2f} s")
    print(f"analyze_run             {fig['analyze_run_s']:.2f} s  (includes its own load_records)")
    print(f"render_markdown         {fig['render_markdown_s']:.2f} s  ({fig['report_md_bytes'] / 1e6:.1f} MB)")
    print(f"render_json             {fig['render_json_s']:.2f} s  ({fig['report_json_bytes'] / 1e6:.1f} MB)")
    print(f"analysis + reports      {total:.2f} s  (target < 10 s)")
    print(
        f"peak RSS                {fig['peak_rss_bytes'] / 2**30:.2f} GiB  (target < 2 GiB; "
        f"{fig['rss_before_bytes'] / 2**20:.0f} MiB after imports)"
    )
    for key in ("profile_tottime", "profile_cumulative"):
        if key in fig:
            print(
                f"\n--- cProfile of analyze_run, by {key.split('_')[1]} "
                f"({fig['analyze_run_s_profiled']:.1f} s under the profiler) ---"
            )
            print("\n".join(line for line in fig[key].splitlines() if line.strip())[:6000])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", type=int, default=500, help="configurations (200 records each by default)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--keep", type=Path, help="write the synthetic run here and keep it")
    ap.add_argument("--profile", action="store_true", help="also run analyze_run under cProfile and print the top")
    ap.add_argument("--hash-mb", type=int, default=256, help="array size for the hashing throughput (0: skip)")
    ap.add_argument("--analyze-only", type=Path, help=argparse.SUPPRESS)  # the fresh measuring process
    args = ap.parse_args(argv)
    if args.analyze_only:
        print(json.dumps(measure_analysis(args.analyze_only, args.profile)))
        return 0
    with tempfile.TemporaryDirectory(prefix="scale-run-") as tmp:
        run = args.keep or Path(tmp) / "synthetic-scale"
        t0 = time.perf_counter()
        info = synthesize_run(run, args.configs, args.seeds, args.repeats)
        size = sum(f.stat().st_size for f in run.rglob("*") if f.is_file())
        print(
            f"synthesized             {info['records']:,} records, {info['artifacts']:,} artifacts, "
            f"{size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s ({run})"
        )
        cmd = [sys.executable, __file__, "--analyze-only", str(run)] + (["--profile"] if args.profile else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        fig = json.loads(proc.stdout.strip().splitlines()[-1])
        _print_analysis(fig)
        wrong = fig["configs"] != len(info["expected"])
        if wrong:
            print(f"MISMATCH: {fig['configs']} configs analysed, {len(info['expected'])} synthesized")
    if args.hash_mb:
        h = measure_hashing(args.hash_mb)
        print(
            f"digest_array            {h['digest_array_gb_s']:.2f} GB/s on {h['bytes'] / 1e6:.0f} MB float32 "
            f"({h['digest_array_s']:.3f} s; bare hashlib.sha256 {h['bare_sha256_gb_s']:.2f} GB/s; target >= 1 GB/s)"
        )
    return 1 if wrong else 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
