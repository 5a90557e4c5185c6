#!/usr/bin/env python
"""What does the harness itself cost? The same MusicGen cells, run in interleaved rounds:

  harness    `harness run` on a few cells of matrices/overhead.toml (runner + a fresh worker
             process, records, artifacts, analysis and the three reports), profile on
  off        the same with the determinism profile off
  bare       plain transformers in one process, the model loaded once:
             MusicgenForConditionalGeneration.from_pretrained + processor + set_seed + generate
             with the same kwargs (no harness code at all: that is the point of a baseline)
  reference  (full mode) the reference node's way: transformers.pipeline("text-to-audio")
             built again for every task (no model cache)
  worker     a worker process on one 8-token cell: spawn -> ready, spawn -> its record
             (``--baseline-tree`` interleaves another checkout's worker: a before/after)

Why rounds: on a shared machine a long block of A then a long block of B reads drift as cost.
Each round runs every column once, in an order that alternates (A/B, then B/A), so drift hits
both sides; the figures are Hodges-Lehmann ratios with their distribution-free 95% interval
(harness.analysis.significance, the test ``harness bench --check`` uses), printed as
``ratio X [95% CI a, b]``. The load average before and after says how busy the machine was.
Outputs are checked too: the bare baseline must produce the harness's waveforms bit for bit,
else it did not do the same work.

    python scripts/overhead.py            # full: 8 rounds x 4 cells x 512 tokens (~5 min idle)
    python scripts/overhead.py --short    # 4 rounds x 3 cells x 128 tokens (~1.5 min; nox -s bench)
    python scripts/overhead.py --short --baseline-tree /path/to/main   # worker start, before/after
    python scripts/overhead.py --short --device cuda:0 --skip-reference   # on a GPU (gpu_proof.sh)

Compare ratios, not seconds; two runs on a quiet machine should give overlapping intervals.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MATRIX = ROOT / "matrices" / "overhead.toml"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.analysis.significance import Change, compare_samples  # noqa: E402
from harness.hubenv import LIBRARY_ENV  # noqa: E402
from harness.spec.matrix import dump_matrix  # noqa: E402

# cells per round and rounds: a round is short so that many of them interleave
MODES: dict[str, dict[str, Any]] = {
    "short": {"max_new_tokens": 128, "seeds": [1, 2, 3], "repeats": 1, "rounds": 4},
    "full": {"max_new_tokens": None, "seeds": [1, 2], "repeats": 2, "rounds": 8},  # None: the matrix's 512
}
# A node passes only the task's generation fields and the model's generation config fills the
# rest; the overhead task gives them all, so the bare baseline's kwargs are exactly the task's.
GENERATION_FIELDS = ("max_new_tokens", "do_sample", "top_k", "top_p", "temperature", "guidance_scale")


# --- the plan --------------------------------------------------------------------------------
def load_plan(
    short: bool, threads: int | None, device: str = "cpu", max_new_tokens: int | None = None
) -> dict[str, Any]:
    """The cells of one round (the matrix's task, the mode's seeds, repeats and tokens)."""
    doc = tomllib.loads(MATRIX.read_text())
    task = doc["tasks"][0]["task"]
    gen = task["generation_config"]
    missing = [f for f in GENERATION_FIELDS if f not in gen]
    if missing:
        raise SystemExit(
            f"{MATRIX}: the task must give {', '.join(missing)} (the bare baseline passes the task's kwargs)"
        )
    mode = MODES["short" if short else "full"]
    gen["max_new_tokens"] = max_new_tokens or mode["max_new_tokens"] or gen["max_new_tokens"]
    doc["axes"]["seed"] = list(mode["seeds"])
    doc["repeats"] = mode["repeats"]
    if threads is not None:
        doc["axes"]["threads"] = [threads]
    doc["axes"]["device"] = [device]
    axes = doc["axes"]
    if doc.get("workers") != 1:
        raise SystemExit(f"{MATRIX}: workers must be 1")
    if len(axes["threads"]) != 1 or axes["batch_size"] != [1] or axes["dtype"] != ["float32"]:
        raise SystemExit(f"{MATRIX}: one thread count, batch 1 and float32 only (the baseline runs exactly these)")
    return {
        "matrix": doc,
        "task": task,
        "kwargs": dict(gen),
        "seeds": list(axes["seed"]),
        "repeats": int(doc["repeats"]),
        "threads": int(axes["threads"][0]),
        "device": device,
        "rounds": int(mode["rounds"]),
    }


def cells_of(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The harness's order within a worker: seed, then repeat."""
    return [{"seed": s, "repeat": r} for s in sorted(plan["seeds"]) for r in range(plan["repeats"])]


def round_order(columns: Sequence[str], rnd: int) -> list[str]:
    """Round 0 runs the columns as given, round 1 reversed, and so on (A/B, B/A): each column
    runs as often first as last, so a drift in the machine's speed hits every column alike."""
    return list(columns) if rnd % 2 == 0 else list(reversed(columns))


# --- the statistics (harness.analysis.significance) ------------------------------------------
def ratio_of(baseline: Sequence[float], current: Sequence[float]) -> Change:
    """current / baseline as a Hodges-Lehmann ratio with its 95% interval and the U test."""
    return compare_samples(baseline, current)


def ratio_text(change: Change) -> str:
    """``ratio 1.04 [95% CI 0.98, 1.11]`` (``unbounded``: too few samples for an interval)."""
    if change.ratio is None:
        return "ratio ? (no samples)"
    if change.ratio_low is None or change.ratio_high is None:
        interval = "[95% CI unbounded: too few samples]"
    else:
        interval = f"[95% CI {change.ratio_low:.2f}, {change.ratio_high:.2f}]"
    return f"ratio {change.ratio:.2f} {interval}"


def ratio_figures(change: Change) -> dict[str, Any]:
    return {
        "ratio": change.ratio,
        "ratio_low": change.ratio_low,
        "ratio_high": change.ratio_high,
        "p_value": change.p_value,
        "n": [change.n_baseline, change.n_current],
    }


def after_warmup(records: Sequence[dict[str, Any]]) -> list[float]:
    """Each ok cell's own time (``total_s``) but the first of its worker's, which pays the
    imports and the model load (the report's cost section leaves it out the same way)."""
    ok = sorted((r for r in records if r.get("status") == "ok"), key=lambda r: r["started_at"])
    return [float(r["timings"]["total_s"]) for r in ok[1:]]


def load_text(before: tuple[float, float, float], after: tuple[float, float, float], cpus: int) -> str:
    busy = max(before[0], after[0]) > 0.5 * cpus

    def fmt(t: tuple[float, float, float]) -> str:
        return " ".join(f"{x:.2f}" for x in t)

    return f"load average (1, 5, 15 min) before {fmt(before)}, after {fmt(after)} on {cpus} CPUs: " + (
        "BUSY machine, other work shared the cores (the intervals carry that noise)" if busy else "quiet"
    )


# --- the child processes ---------------------------------------------------------------------
def _waveform_digest(audio: Any) -> str:
    """digest_array of the (samples, channels) float32 waveform, as the engine stores it."""
    import numpy as np

    from harness.digests import digest_array  # hashing only; not part of the generation work

    wave = np.asarray(audio, dtype=np.float32)
    wave = wave[0] if wave.ndim == 3 else wave  # (batch, channels, samples) -> (channels, samples)
    wave = wave[None, :] if wave.ndim == 1 else wave
    return digest_array(np.ascontiguousarray(wave.T))


def child_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """Plain transformers, one process, the model loaded once: what a node without the
    harness would do for these cells."""
    import torch
    from transformers import AutoProcessor, MusicgenForConditionalGeneration, set_seed

    torch.set_num_threads(spec["threads"])
    device = spec.get("device", "cpu")
    t0 = time.perf_counter()
    model = (
        MusicgenForConditionalGeneration.from_pretrained(spec["path"], dtype=torch.float32, local_files_only=True)
        .to(device)
        .eval()
    )
    processor = AutoProcessor.from_pretrained(spec["path"], local_files_only=True)  # type: ignore[no-untyped-call]
    load_s = time.perf_counter() - t0
    cell_s, digests = [], {}
    for cell in spec["cells"]:
        t0 = time.perf_counter()
        inputs = processor(text=[spec["prompt"]], padding=True, return_tensors="pt").to(device)
        set_seed(cell["seed"])
        with torch.inference_mode():
            audio = model.generate(**inputs, **spec["kwargs"])
        wave = audio[0].to(torch.float32).cpu().numpy()  # .cpu() waits for the device's queue
        cell_s.append(time.perf_counter() - t0)
        digests[f"{cell['seed']}/{cell['repeat']}"] = _waveform_digest(wave)
    return {"load_s": load_s, "cell_s": cell_s, "digests": digests}


def child_reference(spec: dict[str, Any]) -> dict[str, Any]:
    """The reference runner's way: a text-to-audio pipeline built for every task."""
    import torch
    from transformers import pipeline, set_seed

    torch.set_num_threads(spec["threads"])
    build_s, cell_s, digests = 0.0, [], {}
    for cell in spec["cells"]:
        t0 = time.perf_counter()
        pipe = pipeline("text-to-audio", model=spec["path"], device=spec.get("device", "cpu"), dtype=torch.float32)
        built = time.perf_counter()
        set_seed(cell["seed"])
        out = pipe(spec["prompt"], generate_kwargs=dict(spec["kwargs"]))
        cell_s.append(time.perf_counter() - t0)
        build_s += built - t0
        digests[f"{cell['seed']}/{cell['repeat']}"] = _waveform_digest(out["audio"])
        del pipe
    return {"load_s": build_s, "cell_s": cell_s, "digests": digests}


def _env(pythonpath: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LIBRARY_ENV, MPLBACKEND="Agg")
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    return time.perf_counter() - t0, proc


def run_child(mode: str, spec: dict[str, Any], tmp: Path) -> tuple[float, dict[str, Any]]:
    path = tmp / f"{mode}-spec.json"
    path.write_text(json.dumps(spec))
    wall, proc = _timed([sys.executable, __file__, "--child", mode, str(path)], _env())
    if proc.returncode != 0:
        raise SystemExit(f"{mode} baseline failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])


def run_harness(plan: dict[str, Any], profile: str, tmp: Path, rnd: int) -> tuple[float, dict[str, Any]]:
    doc = json.loads(json.dumps(plan["matrix"]))
    doc["axes"]["profile"] = [profile]
    matrix = tmp / f"overhead-{profile}.toml"
    matrix.write_text(dump_matrix(doc))
    out = tmp / f"run-{profile}-{rnd}"
    started = time.time()
    wall, proc = _timed(
        [sys.executable, "-m", "harness.cli", "run", str(matrix), "--out", str(out), "--no-progress"], _env()
    )
    if proc.returncode not in (0, 1):  # 1: a gate failed, still a complete run
        raise SystemExit(f"harness run ({profile}) failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    ok = [r for r in records if r["status"] == "ok"]
    if len(ok) != len(cells_of(plan)):
        raise SystemExit(f"harness run ({profile}): {len(ok)} ok records of {len(cells_of(plan))}; see {out}")
    digests = {f"{r['axes']['seed']}/{r['axes']['repeat']}": r["digests"]["waveform"] for r in ok}
    info = {"cell_s": after_warmup(ok), "digests": digests, "phases": phases(ok, out, started, started + wall)}
    return wall, info


def phases(ok: list[dict[str, Any]], out: Path, started: float, ended: float) -> dict[str, float]:
    """Where a harness run's wall time went, from its own clocks."""
    created = json.loads((out / "manifest.json").read_text())["created_at"]
    ok = sorted(ok, key=lambda r: r["started_at"])
    outside = [r["finished_at"] - r["started_at"] - r["timings"]["total_s"] for r in ok]  # outside execute()
    gaps = [b["started_at"] - a["finished_at"] for a, b in itertools.pairwise(ok)]
    return {
        "cli_start": created - started,  # python, imports, expansion, the environment fingerprint
        "worker_start": ok[0]["started_at"] - created,  # lint, model hashes, the worker's spawn to its first cell
        "first_cell_imports": outside[0],  # torch + transformers + engine imports, paid inside the first cell
        "per_cell_extra": statistics.median([o + g for o, g in zip(outside[1:], gaps, strict=False)])
        if len(ok) > 1
        else 0.0,  # digests, artifact, record, between cells
        "after": ended - ok[-1]["finished_at"],  # worker exit, analysis, three reports, process exit
    }


FIRST_CELL = {  # the smallest real cell: what a worker's first cell pays beyond the generation
    "name": "first-cell",
    "repeats": 1,
    "workers": 1,
    "tasks": [{"name": "m", "task": {"model": "tiny:musicgen", "prompt": "pop", "seed": 1}}],
    "axes": {"threads": [1], "dtype": ["float32"]},
}


def worker_job(run_dir: Path, with_cell: bool) -> str:
    """A worker's job file: no cell (spawn -> ready) or one 8-token tiny MusicGen cell."""
    from harness.execution.protocol import WorkerJob
    from harness.execution.runner import cell_payload
    from harness.spec.matrix import expand, matrix_from_doc

    cells = []
    if with_cell:
        doc = json.loads(json.dumps(FIRST_CELL))
        doc["tasks"][0]["task"]["generation_config"] = {"max_new_tokens": 8}
        cells = [cell_payload(c, []) for c in expand(matrix_from_doc(doc))]
    return WorkerJob(run_dir=str(run_dir), profile="on", cells=cells).model_dump_json()


def worker_start(tmp: Path, pythonpath: Path | None = None) -> tuple[float, float]:
    """Seconds from spawning ``python -m harness.execution.worker`` to its ``ready`` line (the
    environment set, torch imported, the fingerprint read), and to the record of a first cell
    (8 tokens of tiny MusicGen: the imports and model load every worker pays once)."""
    run_dir = tmp / f"worker-run-{time.monotonic_ns()}"
    run_dir.mkdir()
    job = tmp / f"worker-job-{time.monotonic_ns()}.json"  # the worker deletes its job file
    job.write_text(worker_job(run_dir, with_cell=True))
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.execution.worker", str(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT if pythonpath is None else pythonpath,
        env=_env(pythonpath or ROOT),
        text=True,
    )
    assert proc.stdout is not None
    ready = record = None
    for line in proc.stdout:
        event = json.loads(line)
        if ready is None and event.get("event") == "ready":
            ready = time.perf_counter() - t0
        elif record is None and event.get("event") == "record":
            record = time.perf_counter() - t0
            if event["record"]["status"] != "ok":
                raise SystemExit(f"the worker ({pythonpath or ROOT}): first cell {event['record'].get('reason')}")
    proc.wait()
    if ready is None or record is None:
        raise SystemExit(f"the worker ({pythonpath or ROOT}) exited {proc.returncode} without ready and a record")
    return ready, record


# --- the rounds --------------------------------------------------------------------------------
def measure(args: argparse.Namespace, plan: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    columns = ["harness", "bare"]
    if not args.skip_profile:
        columns.insert(1, "off")
    if not args.skip_reference and not args.short:
        columns.append("reference")
    if not args.skip_worker:
        columns += ["worker"] + (["worker-baseline"] if args.baseline_tree else [])
    walls: dict[str, list[float]] = {c: [] for c in columns}
    cells: dict[str, list[float]] = {c: [] for c in columns}
    digests: dict[str, dict[str, str]] = {}
    phase_rounds: dict[str, list[dict[str, float]]] = {}
    rounds = args.rounds or plan["rounds"]
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp_name:
        tmp = args.keep or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        for rnd in range(rounds):
            for column in round_order(columns, rnd):
                if column in ("bare", "reference"):
                    wall, info = run_child(column, spec, tmp)
                    cells[column] += info["cell_s"][1:]  # the first pays the imports, as in the harness
                elif column.startswith("worker"):
                    wall, first = worker_start(tmp, args.baseline_tree if column != "worker" else None)
                    cells[column].append(first)
                    info = {}
                else:
                    wall, info = run_harness(plan, "on" if column == "harness" else "off", tmp, rnd)
                    cells[column] += info["cell_s"]
                    phase_rounds.setdefault(column, []).append(info["phases"])
                walls[column].append(wall)
                digests.setdefault(column, info.get("digests", {}))
            print(f"  round {rnd + 1}/{rounds}: " + ", ".join(f"{c} {walls[c][-1]:.2f} s" for c in columns))
    return {"walls": walls, "cells": cells, "digests": digests, "rounds": rounds, "phases": phase_rounds}


def report(plan: dict[str, Any], measured: dict[str, Any], load: str) -> dict[str, Any]:
    """Print the ratios and return the figures (``--json``; scripts/gpu_proof.sh reads
    ``ratio``, ``profile_cost_pct`` and ``profile_cost_rounds_pct``)."""
    walls, cells, digests = measured["walls"], measured["cells"], measured["digests"]
    n = len(cells_of(plan))
    same = sum(digests["bare"].get(k) == v for k, v in digests["harness"].items())
    print(
        f"outputs    bare == harness waveform digests: {same}/{n}"
        + ("" if same == n else "  (WARNING: the baseline did not reproduce the harness's outputs)")
    )
    whole = ratio_of(walls["bare"], walls["harness"])
    per_cell = ratio_of(cells["bare"], cells["harness"])
    print(f"harness vs bare: {ratio_text(whole)}  (process wall per round, start-up and reports included)")
    print(f"  per cell: {ratio_text(per_cell)}  (each cell's own time, the first of each process left out)")
    ph = {k: statistics.median(p[k] for p in measured["phases"]["harness"]) for k in measured["phases"]["harness"][0]}
    print(
        f"  harness phases (medians): cli start {ph['cli_start']:.2f} s, to the first cell {ph['worker_start']:.2f} s, "
        f"imports in the first cell {ph['first_cell_imports']:.2f} s, {ph['per_cell_extra'] * 1e3:.1f} ms per cell "
        f"for digests, artifact, record; analysis + reports + exit {ph['after']:.2f} s"
    )
    figures: dict[str, Any] = {
        "phases": ph,
        "device": plan["device"],
        "cells": n,
        "max_new_tokens": plan["kwargs"]["max_new_tokens"],
        "rounds": measured["rounds"],
        "load": load,
        "walls_s": walls,
        "cell_s": cells,
        "bare_equals_harness": f"{same}/{n}",
        "ratio": whole.ratio,
        "harness_vs_bare": ratio_figures(whole),
        "harness_vs_bare_per_cell": ratio_figures(per_cell),
    }
    if walls.get("off"):
        on_off = ratio_of(cells["off"], cells["harness"])
        on_off_wall = ratio_of(walls["off"], walls["harness"])
        print(f"profile on vs off: {ratio_text(on_off)}  (per cell, the first of each worker left out)")
        print(f"  whole run: {ratio_text(on_off_wall)}")
        figures["profile_on_vs_off"] = ratio_figures(on_off)
        figures["profile_on_vs_off_wall"] = ratio_figures(on_off_wall)
        figures["profile_cost_pct"] = float("nan") if on_off.ratio is None else (on_off.ratio - 1) * 100
        figures["profile_cost_generation_pct"] = figures["profile_cost_pct"]  # per cell: the generation's cost
        pairs = zip(walls["harness"], walls["off"], strict=True)
        figures["profile_cost_rounds_pct"] = [(a / b - 1) * 100 for a, b in pairs]
    if walls.get("reference"):
        ref = ratio_of(walls["bare"], walls["reference"])
        print(f"reference (pipeline per task) vs bare: {ratio_text(ref)}  (process wall per round)")
        figures["reference_vs_bare"] = ratio_figures(ref)
    if not walls.get("worker"):
        return figures
    start, first = walls["worker"], cells["worker"]
    print(
        f"worker start: {statistics.median(start):.2f} s spawn to ready, {statistics.median(first):.2f} s to the "
        f"record of an 8-token tiny MusicGen cell (medians of {len(start)}; ready min {min(start):.2f}, "
        f"max {max(start):.2f})"
    )
    figures["worker_ready_s"], figures["worker_first_record_s"] = start, first
    if walls.get("worker-baseline"):
        base, base_first = walls["worker-baseline"], cells["worker-baseline"]
        change, change_first = ratio_of(base, start), ratio_of(base_first, first)
        print(f"  vs the baseline tree, spawn to ready ({statistics.median(base):.2f} s): {ratio_text(change)}")
        print(
            f"  vs the baseline tree, spawn to first record ({statistics.median(base_first):.2f} s): "
            f"{ratio_text(change_first)}"
        )
        figures["worker_vs_baseline"] = {**ratio_figures(change), "baseline_ready_s": base}
        figures["worker_first_record_vs_baseline"] = {**ratio_figures(change_first), "baseline_s": base_first}
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", "--quick", action="store_true", help=f"the short mode: {MODES['short']}")
    ap.add_argument("--rounds", type=int, help="rounds (default: 4 short, 8 full)")
    ap.add_argument("--threads", type=int, help="override the matrix's thread count (harness and baselines alike)")
    ap.add_argument("--skip-reference", action="store_true", help="skip the pipeline-per-task column (full mode)")
    ap.add_argument("--skip-profile", action="store_true", help="skip the profile on/off comparison")
    ap.add_argument("--skip-worker", action="store_true", help="skip the worker start column")
    ap.add_argument("--baseline-tree", type=Path, help="another checkout whose worker start is interleaved")
    ap.add_argument("--keep", type=Path, help="keep the runs and specs in this folder")
    ap.add_argument("--device", default="cpu", help="run every column on this device (cpu, cuda:N)")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    ap.add_argument("--max-new-tokens", type=int, help="override the mode's max_new_tokens")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "SPEC"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(Path(args.child[1]).read_text())
        result = child_bare(spec) if args.child[0] == "bare" else child_reference(spec)
        print(json.dumps(result))
        return 0
    if args.rounds is not None and args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    if args.baseline_tree is not None and not (args.baseline_tree / "harness" / "execution" / "worker.py").is_file():
        raise SystemExit(f"--baseline-tree {args.baseline_tree}: no harness/execution/worker.py there")
    if args.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device}: CUDA is not available (torch {torch.__version__})")
    plan = load_plan(args.short, args.threads, args.device, args.max_new_tokens)
    from harness.models.tiny import ensure_tiny

    path = ensure_tiny(plan["task"]["model"].split(":", 1)[1])  # built before any clock starts
    spec = {
        "path": str(path),
        "prompt": plan["task"]["prompt"],
        "kwargs": plan["kwargs"],
        "threads": plan["threads"],
        "cells": cells_of(plan),
        "device": args.device,
    }
    print(
        f"{args.rounds or plan['rounds']} interleaved rounds of {len(spec['cells'])} cells: tiny MusicGen, "
        f"{plan['kwargs']['max_new_tokens']} new tokens, seeds {plan['seeds']} x {plan['repeats']} repeats, "
        f"{plan['threads']} thread(s), batch 1, 1 worker, {args.device}" + (" (short)" if args.short else " (full)")
    )
    cpus = os.cpu_count() or 1
    before = os.getloadavg()
    measured = measure(args, plan, spec)
    load = load_text(before, os.getloadavg(), cpus)
    print(load)
    figures = report(plan, measured, load)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
