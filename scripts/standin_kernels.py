"""Which configurations change tokens across CPU kernel levels, and how many tokens bfloat16
changes against float32: the random tiny models beside the trained stand-ins.

Each (model, dtype, isa) is one ``harness exec`` of the smoke task in a fresh process, one
thread, seed 42 (``--isa`` caps ATen, oneDNN and oneMKL before torch starts). Compared: the
discrete output (MusicGen codes, GPT-2 token ids, from ``*.tokens.json``) and the output
digest (waveform or response bytes) against the same dtype at ``native``; and, at ``native``,
bfloat16's and 8-bit's tokens against float32's (positions that differ).

Usage: ``nice -n 5 python scripts/standin_kernels.py [--isa native avx2 scalar] [--json F]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TASKS = ("tiny-musicgen-pop", "standin-musicgen-pop", "tiny-gpt2-chatbot", "standin-gpt2-chatbot")
CONFIGS = {"float32": ("float32", None), "bfloat16": ("bfloat16", None), "8-bit": ("float32", 8)}


def run_one(task: str, config: str, isa: str, work: Path) -> dict:
    dtype, bits = CONFIGS[config]
    doc = json.loads((REPO / "matrices" / "tasks" / f"{task}.json").read_text())
    doc.update({"dtype": dtype, "quantize_bits": bits})
    stem = f"{task}-{config}-{isa}"
    path = work / f"{stem}.json"
    path.write_text(json.dumps(doc))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "exec", str(path), "--threads", "1", "--isa", isa, "--out", str(work)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"task": task, "config": config, "isa": isa, "error": done.stderr.strip().splitlines()[-1]}
    digests = json.loads((work / f"{stem}.digests.json").read_text())
    tokens = json.loads((work / f"{stem}.tokens.json").read_text())["arrays"]
    ((name, rows),) = tokens.items()
    return {
        "task": task,
        "config": config,
        "isa": isa,
        "output": digests["digests"].get("output"),
        "tokens": rows,
        "token_array": name,
        "wall_s": round(wall, 2),
        "timings": digests.get("timings"),
    }


def differing(a: list, b: list) -> tuple[int, int]:
    """(positions that differ, positions compared) of two equally shaped token arrays."""
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        n = min(x.size, y.size)
        return int((x.ravel()[:n] != y.ravel()[:n]).sum()) + abs(x.size - y.size), max(x.size, y.size)
    return int((x != y).sum()), int(x.size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--isa", nargs="+", default=["native", "avx2", "scalar"])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--native-only", nargs="*", default=[], help="tasks run at native only (dtype comparison)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            for config in args.configs:
                for isa in ["native"] if task in args.native_only else args.isa:
                    r = run_one(task, config, isa, Path(tmp))
                    rows.append(r)
                    print(
                        f"{task} {config} {isa}: {r.get('error') or r['output'][:12]} ({r.get('wall_s')} s)", flush=True
                    )
    by = {(r["task"], r["config"], r["isa"]): r for r in rows}
    print(
        "\n| task | config | "
        + " | ".join(f"{i} vs native" for i in args.isa[1:])
        + " | tokens differing from float32 |"
    )
    print("| --- | --- |" + " --- |" * len(args.isa))
    for task in args.tasks:
        for config in args.configs:
            base = by[(task, config, "native")]
            cells = []
            for isa in args.isa[1:]:
                other = by.get((task, config, isa), {"error": "not run"})
                if "error" in other or "error" in base:
                    cells.append(other.get("error") or base.get("error"))
                    continue
                d, n = differing(base["tokens"], other["tokens"])
                cells.append("bitwise" if other["output"] == base["output"] else f"output differs, tokens {d}/{n}")
            ref = by[(task, "float32", "native")]
            if config == "float32" or "error" in base or "error" in ref:
                vs = "-"
            else:
                d, n = differing(ref["tokens"], base["tokens"])
                vs = f"{d}/{n}"
            print(f"| {task} | {config} | " + " | ".join(cells) + f" | {vs} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
