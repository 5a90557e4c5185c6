#!/usr/bin/env python
"""What does the harness itself cost? The same MusicGen cells three ways, each timed as a
whole process (start-up, imports and model loads included):

  harness    `harness run matrices/overhead.toml` (runner + a fresh worker process, records,
             artifacts, analysis and the three reports)
  bare       plain transformers in one process, the model loaded once:
             MusicgenForConditionalGeneration.from_pretrained + processor + set_seed + generate
             with the same kwargs (no harness code at all: that is the point of a baseline)
  reference  the reference node's way: transformers.pipeline("text-to-audio", model=path)
             built again for every task (no model cache)

and prints ``ratio X.XX`` (harness / bare, target <= 1.10), the reference runner's ratio,
the fixed cost of a worker start, and the determinism profile's cost (the harness run with
the profile on vs off: ``determinism profile cost X.X%``, target within 5% on the CPU).
Outputs are checked too: the bare baseline must produce the harness's waveforms bit for bit,
else it did not do the same work.

    python scripts/overhead.py            # full: ~30 s of generation per column, a few minutes
    python scripts/overhead.py --quick    # ~5 s per column, for testing
    python scripts/overhead.py --threads 1   # override the matrix's thread count (noisy machines:
                                             # 2 OpenMP threads on 2 busy cores spin badly)
    python scripts/overhead.py --quick --device cuda:0 --skip-reference --rounds 2
                                             # on a GPU (scripts/gpu_proof.sh): every column on
                                             # cuda:0, harness / profile-off runs interleaved

Timings are only as quiet as the machine: run it on an idle one, and compare ratios, not seconds.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MATRIX = ROOT / "matrices" / "overhead.toml"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.hubenv import LIBRARY_ENV  # noqa: E402
from harness.spec.matrix import dump_matrix  # noqa: E402

QUICK = {"max_new_tokens": 256, "seeds": [1, 2], "repeats": 4}
# A node passes only the task's generation fields and the model's generation config fills the
# rest; the overhead task gives them all, so the bare baseline's kwargs are exactly the task's.
GENERATION_FIELDS = ("max_new_tokens", "do_sample", "top_k", "top_p", "temperature", "guidance_scale")


# --- the plan --------------------------------------------------------------------------------
def load_plan(
    quick: bool, threads: int | None, device: str = "cpu", max_new_tokens: int | None = None
) -> dict[str, Any]:
    doc = tomllib.loads(MATRIX.read_text())
    task = doc["tasks"][0]["task"]
    gen = task["generation_config"]
    missing = [f for f in GENERATION_FIELDS if f not in gen]
    if missing:
        raise SystemExit(
            f"{MATRIX}: the task must give {', '.join(missing)} (the bare baseline passes the task's kwargs)"
        )
    if quick:
        gen["max_new_tokens"] = QUICK["max_new_tokens"]
        doc["axes"]["seed"] = QUICK["seeds"]
        doc["repeats"] = QUICK["repeats"]
    if threads is not None:
        doc["axes"]["threads"] = [threads]
    if max_new_tokens is not None:
        gen["max_new_tokens"] = max_new_tokens
    doc["axes"]["device"] = [device]
    axes = doc["axes"]
    for name, want in (("workers", 1),):
        if doc.get(name) != want:
            raise SystemExit(f"{MATRIX}: {name} must be {want}")
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
    }


def cells_of(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The harness's order within a worker: seed, then repeat."""
    return [{"seed": s, "repeat": r} for s in sorted(plan["seeds"]) for r in range(plan["repeats"])]


# --- the child processes ---------------------------------------------------------------------
def _waveform_digest(audio) -> str:
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
    processor = AutoProcessor.from_pretrained(spec["path"], local_files_only=True)
    load_s = time.perf_counter() - t0
    generate_s, digests = 0.0, {}
    for cell in spec["cells"]:
        t0 = time.perf_counter()
        inputs = processor(text=[spec["prompt"]], padding=True, return_tensors="pt").to(device)
        set_seed(cell["seed"])
        with torch.inference_mode():
            audio = model.generate(**inputs, **spec["kwargs"])
        wave = audio[0].to(torch.float32).cpu().numpy()  # .cpu() waits for the device's queue
        generate_s += time.perf_counter() - t0
        digests[f"{cell['seed']}/{cell['repeat']}"] = _waveform_digest(wave)
    return {"load_s": load_s, "generate_s": generate_s, "digests": digests}


def child_reference(spec: dict[str, Any]) -> dict[str, Any]:
    """The reference runner's way: a text-to-audio pipeline built for every task."""
    import torch
    from transformers import pipeline, set_seed

    torch.set_num_threads(spec["threads"])
    build_s = generate_s = 0.0
    digests = {}
    for cell in spec["cells"]:
        t0 = time.perf_counter()
        pipe = pipeline("text-to-audio", model=spec["path"], device=spec.get("device", "cpu"), dtype=torch.float32)
        build_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        set_seed(cell["seed"])
        out = pipe(spec["prompt"], generate_kwargs=dict(spec["kwargs"]))
        generate_s += time.perf_counter() - t0
        digests[f"{cell['seed']}/{cell['repeat']}"] = _waveform_digest(out["audio"])
        del pipe
    return {"load_s": build_s, "generate_s": generate_s, "digests": digests}


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    return time.perf_counter() - t0, proc


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(LIBRARY_ENV, MPLBACKEND="Agg")
    return env


def run_child(mode: str, spec: dict[str, Any], tmp: Path) -> tuple[float, dict[str, Any]]:
    path = tmp / f"{mode}-spec.json"
    path.write_text(json.dumps(spec))
    wall, proc = _timed([sys.executable, __file__, "--child", mode, str(path)], _env())
    if proc.returncode != 0:
        raise SystemExit(f"{mode} baseline failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])


def run_harness(plan: dict[str, Any], profile: str, tmp: Path, rnd: int = 0) -> tuple[float, dict[str, Any]]:
    doc = json.loads(json.dumps(plan["matrix"]))
    doc["axes"]["profile"] = [profile]
    matrix = tmp / f"overhead-{profile}.toml"
    matrix.write_text(dump_matrix(doc))
    out = tmp / f"run-{profile}-{rnd}"
    started = time.time()
    wall, proc = _timed(
        [sys.executable, "-m", "harness.cli", "run", str(matrix), "--out", str(out), "--no-progress"], _env()
    )
    ended = started + wall
    if proc.returncode not in (0, 1):  # 1: a gate failed, still a complete run
        raise SystemExit(f"harness run ({profile}) failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    ok = [r for r in records if r["status"] == "ok"]
    if len(ok) != len(cells_of(plan)):
        raise SystemExit(f"harness run ({profile}): {len(ok)} ok records of {len(cells_of(plan))}; see {out}")
    t = lambda key: sum(r["timings"].get(key, 0.0) for r in ok)
    digests = {f"{r['axes']['seed']}/{r['axes']['repeat']}": r["digests"]["waveform"] for r in ok}
    created = json.loads((out / "manifest.json").read_text())["created_at"]
    ok.sort(key=lambda r: r["started_at"])
    first, last = ok[0]["started_at"], ok[-1]["finished_at"]
    outside = [
        r["finished_at"] - r["started_at"] - r["timings"]["total_s"] for r in ok
    ]  # per cell, outside execute()'s clock
    gaps = [b["started_at"] - a["finished_at"] for a, b in itertools.pairwise(ok)]
    phases = {  # where the wall time went, from the run's own clocks
        "cli_start": created - started,  # python + imports + expansion + environment fingerprint
        "worker_start": first - created,  # lint, tiny model hashes, worker spawn until its first cell starts
        "first_cell_imports": outside[0],  # torch + transformers + engine imports, paid inside the first cell
        "cells": last - first,
        "per_cell_extra": statistics.median([o + g for o, g in zip(outside[1:], gaps[1:] + [0.0], strict=False)])
        if len(ok) > 1
        else 0.0,
        "after": ended - last,  # worker exit, analysis, three reports, process exit
    }
    return wall, {
        "generate_s": t("encode_s") + t("generate_s") + t("decode_s"),
        "cells_s": t("total_s"),
        "load_s": t("load_s"),
        "digests": digests,
        "run_dir": str(out),
        "phases": phases,
    }


def worker_startup(tmp: Path, rounds: int) -> dict[str, float]:
    """Spawn -> 'ready' and spawn -> exit of ``python -m harness.execution.worker`` with an empty job,
    and the import of torch + transformers' MusicGen a real first cell adds on top."""
    job = tmp / "empty-job.json"
    (tmp / "empty-run").mkdir(exist_ok=True)
    job.write_text(json.dumps({"run_dir": str(tmp / "empty-run"), "profile": "on", "cells": []}))
    ready, done, imports = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.execution.worker", str(job)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env=_env(),
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line).get("event") == "ready":
                ready.append(time.perf_counter() - t0)
        proc.wait()
        done.append(time.perf_counter() - t0)
        wall, _ = _timed(
            [
                sys.executable,
                "-c",
                "import torch, transformers; from transformers import MusicgenForConditionalGeneration",
            ],
            _env(),
        )
        imports.append(wall)
    return {
        "ready_s": statistics.median(ready),
        "exit_s": statistics.median(done),
        "imports_s": statistics.median(imports),
    }


def report(
    plan: dict[str, Any],
    cells: list[dict[str, Any]],
    walls: dict[str, list[float]],
    best: dict[str, tuple[float, dict[str, Any]]],
    startup: dict[str, float],
    gens: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """Print the figures and return them (``--json``). ``at equal generation`` swaps a column's
    own generation time for the bare baseline's (the work is the same, the outputs identical):
    what remains is the column's fixed and per-cell cost, which noise from other processes
    distorts less. With several rounds the profile's cost is also given per round: the rounds
    rotate the columns, so profile on and off alternate (A/B/A/B) and drift hits both."""
    gens = gens or {}
    spread = lambda c: "" if len(walls[c]) < 2 else f"  [rounds: {', '.join(f'{w:.2f}' for w in walls[c])}]"
    bare_wall, bare = best["bare"]
    on_wall, on = best["harness"]
    print(
        f"bare       {bare_wall:7.2f} s wall  (load {bare['load_s']:.2f} s, generation {bare['generate_s']:.2f} s)"
        + spread("bare")
    )
    print(
        f"harness    {on_wall:7.2f} s wall  (load {on['load_s']:.2f} s, generation {on['generate_s']:.2f} s, "
        f"cells {on['cells_s']:.2f} s, outside cells {on_wall - on['cells_s']:.2f} s)" + spread("harness")
    )
    ph = on["phases"]
    print(
        f"  harness phases: cli start {ph['cli_start']:.2f} s, worker spawn to first cell {ph['worker_start']:.2f} s, "
        f"imports in the first cell {ph['first_cell_imports']:.2f} s, cells {ph['cells']:.2f} s "
        f"({ph['per_cell_extra'] * 1e3:.1f} ms per cell for digests, artifact, record), "
        f"analysis + reports + exit {ph['after']:.2f} s"
    )
    same = sum(bare["digests"].get(k) == v for k, v in on["digests"].items())
    figures: dict[str, Any] = {
        "device": plan.get("device", "cpu"),
        "cells": len(cells),
        "max_new_tokens": plan["kwargs"]["max_new_tokens"],
        "walls_s": walls,
        "generation_s": gens,
        "bare_equals_harness": f"{same}/{len(cells)}",
        "ratio": on_wall / bare_wall,
        "worker_start": startup,
    }
    print(
        f"outputs    bare == harness waveform digests: {same}/{len(cells)}"
        + ("" if same == len(cells) else "  (WARNING: the baseline did not reproduce the harness's outputs)")
    )

    def equal_gen(wall: float, info: dict[str, Any]) -> float:
        return (wall - info["generate_s"] + bare["generate_s"]) / bare_wall

    print(
        f"ratio {on_wall / bare_wall:.2f}  (harness / bare, worker start-up included; target <= 1.10; "
        f"at equal generation {equal_gen(on_wall, on):.2f}; "
        f"fixed cost {on_wall - on['generate_s'] - (bare_wall - bare['generate_s']):+.2f} s)"
    )
    if "reference" in best:
        ref_wall, ref = best["reference"]
        print(
            f"reference  {ref_wall:7.2f} s wall  (pipeline built per task: {ref['load_s']:.2f} s, "
            f"generation {ref['generate_s']:.2f} s)" + spread("reference")
        )
        print(
            f"reference ratio {ref_wall / bare_wall:.2f}  (pipeline per task / bare; at equal generation "
            f"{equal_gen(ref_wall, ref):.2f})"
        )
    print(
        f"worker start  {startup['ready_s']:.2f} s spawn -> ready, {startup['exit_s']:.2f} s spawn -> exit "
        f"(empty job); + {startup['imports_s']:.2f} s python + torch + transformers MusicGen import "
        f"(paid by the first cell), + the model load ({on['load_s']:.2f} s here)"
    )
    if "off" in best:
        off_wall, off = best["off"]
        print(
            f"profile off {off_wall:7.2f} s wall  (generation {off['generate_s']:.2f} s); "
            f"profile on {on_wall:.2f} s (generation {on['generate_s']:.2f} s)" + spread("off")
        )
        print(
            f"determinism profile cost {(on_wall / off_wall - 1) * 100:.1f}%  (wall, on vs off; "
            f"generation only {(on['generate_s'] / off['generate_s'] - 1) * 100:+.1f}%; target within 5%)"
        )
        figures["profile_cost_pct"] = (on_wall / off_wall - 1) * 100
        figures["profile_cost_generation_pct"] = (on["generate_s"] / off["generate_s"] - 1) * 100
        per_round = [(a / b - 1) * 100 for a, b in zip(walls["harness"], walls["off"], strict=False)]
        per_gen = [(a / b - 1) * 100 for a, b in zip(gens.get("harness", []), gens.get("off", []), strict=False)]
        if len(per_round) > 1:
            print(
                f"determinism profile cost per interleaved round: {', '.join(f'{x:+.1f}%' for x in per_round)} "
                f"(median {statistics.median(per_round):+.1f}%; generation only "
                f"{', '.join(f'{x:+.1f}%' for x in per_gen)})"
            )
        figures["profile_cost_rounds_pct"] = per_round
        figures["profile_cost_generation_rounds_pct"] = per_gen
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"scale the work down (~5 s per column: {QUICK})")
    ap.add_argument("--threads", type=int, help="override the matrix's thread count (harness and baselines alike)")
    ap.add_argument("--skip-reference", action="store_true", help="skip the pipeline-per-task column")
    ap.add_argument("--skip-profile", action="store_true", help="skip the profile on/off comparison")
    ap.add_argument("--keep", type=Path, help="keep the runs and specs in this folder")
    ap.add_argument("--device", default="cpu", help="run every column on this device (cpu, cuda:N)")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    ap.add_argument("--max-new-tokens", type=int, help="override the task's max_new_tokens (after --quick)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every column this many times (rotated order); the fastest of each is reported",
    )
    ap.add_argument("--child", nargs=2, metavar=("MODE", "SPEC"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(Path(args.child[1]).read_text())
        result = child_bare(spec) if args.child[0] == "bare" else child_reference(spec)
        print(json.dumps(result))
        return 0

    if args.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device}: CUDA is not available (torch {torch.__version__})")
    plan = load_plan(args.quick, args.threads, args.device, args.max_new_tokens)
    from harness.models.tiny import ensure_tiny

    path = ensure_tiny(plan["task"]["model"].split(":", 1)[1])  # built before any clock starts
    cells = cells_of(plan)
    spec = {
        "path": str(path),
        "prompt": plan["task"]["prompt"],
        "kwargs": plan["kwargs"],
        "threads": plan["threads"],
        "cells": cells,
        "device": args.device,
    }
    print(
        f"cells {len(cells)}: tiny MusicGen, {plan['kwargs']['max_new_tokens']} new tokens, seeds {plan['seeds']} "
        f"x {plan['repeats']} repeats, {plan['threads']} thread(s), batch 1, 1 worker"
        + (" (quick)" if args.quick else "")
    )
    columns = (
        ["bare", "harness"] + ([] if args.skip_reference else ["reference"]) + ([] if args.skip_profile else ["off"])
    )
    walls: dict[str, list[float]] = {c: [] for c in columns}
    gens: dict[str, list[float]] = {c: [] for c in columns}  # generation seconds per round
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp_name:
        tmp = args.keep or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        for rnd in range(args.rounds):
            order = columns[rnd % len(columns) :] + columns[: rnd % len(columns)]  # rotate: drift hits every column
            for column in order:
                if column in ("bare", "reference"):
                    wall, info = run_child(column, spec, tmp)
                else:
                    wall, info = run_harness(plan, "on" if column == "harness" else "off", tmp, rnd)
                walls[column].append(wall)
                gens[column].append(info["generate_s"])
                if column not in best or wall < best[column][0]:
                    best[column] = (wall, info)
        startup = worker_startup(tmp, 1 if args.quick else 3)
    figures = report(plan, cells, walls, best, startup, gens)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
