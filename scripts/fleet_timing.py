"""Wall time of a matrix with --parallel 2 vs 1, and with the Ray executor vs the local one.

    python scripts/fleet_timing.py [MATRIX] [--skip-ray] [--out DIR]

Prints the machine's load (``os.getloadavg``) before and after: timings taken on a busy
machine are not figures to quote. Each run is a fresh ``harness run`` process (what a user
types). The Ray run starts its own local Ray instance; Ray's start-up is measured apart
(``ray.init`` to ready) and the ratio is given with and without it. Goals (issue #13):
parallel 2 / parallel 1 <= 0.65 on 2 cores; Ray / local <= 1.15 with start-up included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def run(matrix: Path, out: Path, *extra: str) -> tuple[float, dict]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(matrix),
            "--out",
            str(out),
            "--no-progress",
            "--formats",
            "json",
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # 1: a gate failed, the timing still counts
        sys.exit(f"harness run {' '.join(extra)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    session = json.loads((out / "manifest.json").read_text())["execution"][-1]
    return wall, session


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("matrix", nargs="?", default=str(ROOT / "matrices" / "smoke.toml"))
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--out", help="where the runs go (default: a temporary folder)")
    args = p.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fleet-timing-"))
    matrix = Path(args.matrix).resolve()
    print(f"matrix {matrix}; before: {load()}")
    subprocess.run(
        [sys.executable, "-m", "harness.cli", "tiny"], cwd=ROOT, capture_output=True
    )  # built once, not timed
    p1, _ = run(matrix, out / "parallel1", "--parallel", "1")
    print(f"local --parallel 1: {p1:.1f} s")
    p2, s2 = run(matrix, out / "parallel2", "--parallel", "2")
    print(f"local --parallel 2: {p2:.1f} s (max {s2['max_concurrent_workers']} workers at once)")
    print(f"ratio parallel 2 / 1: {p2 / p1:.2f} (goal <= 0.65)")
    if not args.skip_ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            print("ray is not installed: pip install -e '.[fleet]' (Ray timing skipped)")
        else:
            wall, session = run(matrix, out / "ray", "--executor", "ray")
            startup = session.get("startup_s", 0.0)
            print(
                f"ray executor: {wall:.1f} s in all, of which Ray start-up {startup:.1f} s "
                f"(run alone {session['wall_s']:.1f} s)"
            )
            print(
                f"ratio ray / local parallel 1: {wall / p1:.2f} with start-up (goal <= 1.15), "
                f"{(wall - startup) / p1:.2f} without"
            )
    print(f"after: {load()}")
    print(f"runs kept in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
