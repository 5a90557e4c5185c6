#!/usr/bin/env python
"""What does the determinism profile cost, and which of its parts? Measured in ONE process set up
as a worker is (the profile's environment before torch starts), per kind, interleaved:

  off        the profile off: torch's defaults (no deterministic algorithms)
  on         the profile on: ``use_deterministic_algorithms(True, warn_only=True)``, cuDNN
             deterministic, IEEE fp32 matmul; torch fills uninitialised memory (its default
             under deterministic algorithms: ``torch.utils.deterministic.fill_uninitialized_memory``)
  on-nofill  the profile on without that filling
  on-1t      the profile on at 1 thread instead of the machine's cores (a pinned thread count
             is what makes float reductions repeat across nodes)

Each round runs every variant (rounds alternate the order: A/B then B/A), a few executions each,
on the warm model; an execution's sample is its encode + generate + decode time. Each variant is
reported against ``off`` (``on-1t`` against ``on``) as a Hodges-Lehmann ratio with its 95%
interval (harness.analysis.significance), with the digests: on, on-nofill and off give the same
bytes here (the CPU kernels these models run have no nondeterministic variant); 1 thread may not.

    python scripts/profile_cost.py                  # 6 rounds x 3 executions per variant and kind
    python scripts/profile_cost.py --rounds 3 --kinds gpt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.determinism import apply_environment  # noqa: E402

apply_environment("on")  # before torch: as in a worker (CUBLAS_WORKSPACE_CONFIG; nothing on a CPU)

from harness.analysis.significance import compare_samples  # noqa: E402

TASKS: dict[str, dict[str, Any]] = {  # the smoke tasks, shortened so a round takes seconds
    "audio": {
        "model": "tiny:musicgen",
        "prompt": "80s pop track with bassy drums and synth",
        "seed": 42,
        "generation_config": {"max_new_tokens": 128, "do_sample": True, "top_k": 250, "guidance_scale": 3.0},
    },
    "gpt": {
        "model": "tiny:gpt2",
        "messages": [{"role": "user", "content": "I want to create a chat bot. Any suggestions?"}],
        "seed": 42,
        "generation_config": {"max_new_tokens": 64, "do_sample": True, "top_k": 20},
    },
    "audioldm": {
        "model": "tiny:audioldm",
        "prompt": "A classic cocktail lounge vibe with smooth jazz piano",
        "num_inference_steps": 8,
        "audio_length_in_s": 2.0,
        "guidance_scale": 2.5,
        "seed": 120,
    },
}
VARIANTS = ("off", "on", "on-nofill", "on-1t")
AGAINST = {"on": "off", "on-nofill": "off", "on-1t": "on"}


def variant_settings(variant: str, cores: int) -> tuple[str, int, bool]:
    """(profile, threads, fill_uninitialized_memory) of a variant."""
    return ("off" if variant == "off" else "on", 1 if variant == "on-1t" else cores, variant != "on-nofill")


def round_order(variants: Sequence[str], rnd: int) -> list[str]:
    return list(variants) if rnd % 2 == 0 else list(reversed(variants))


def run_kind(kind: str, rounds: int, per_round: int, cores: int) -> dict[str, Any]:
    import torch

    from harness.engines.base import ModelCache
    from harness.execution.execute import execute
    from harness.spec.tasks import parse_task

    task = parse_task(TASKS[kind], kind)
    cache = ModelCache()
    execute(task, kind, "cpu", cache, threads=cores, profile="on")  # load + warm-up, not timed
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    digests: dict[str, set[str]] = {v: set() for v in VARIANTS}
    for rnd in range(rounds):
        for variant in round_order(VARIANTS, rnd):
            profile, threads, fill = variant_settings(variant, cores)
            setattr(torch.utils.deterministic, "fill_uninitialized_memory", fill)  # noqa: B010 (untyped in torch)
            try:
                for _ in range(per_round):
                    ex = execute(task, kind, "cpu", cache, threads=threads, profile=profile)
                    samples[variant].append(sum(ex.timings.get(k, 0.0) for k in ("encode_s", "generate_s", "decode_s")))
                    digests[variant].add(json.dumps(ex.output.digests(), sort_keys=True))
            finally:
                setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)  # noqa: B010
    out: dict[str, Any] = {"samples_s": samples, "same_output_as_off": {}}
    for variant, base in AGAINST.items():
        change = compare_samples(samples[base], samples[variant])
        out[variant] = {
            "against": base,
            "ratio": change.ratio,
            "ratio_low": change.ratio_low,
            "ratio_high": change.ratio_high,
            "p_value": change.p_value,
            "n": [change.n_baseline, change.n_current],
        }
        out["same_output_as_off"][variant] = digests[variant] == digests["off"] and len(digests["off"]) == 1
    return out


def interval(fig: dict[str, Any]) -> str:
    if fig["ratio_low"] is None or fig["ratio_high"] is None:
        return f"ratio {fig['ratio']:.3f} [95% CI unbounded]"
    return f"ratio {fig['ratio']:.3f} [95% CI {fig['ratio_low']:.3f}, {fig['ratio_high']:.3f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--per-round", type=int, default=3, help="executions per variant and round")
    ap.add_argument("--kinds", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="the profile's thread count")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from harness.models.tiny import ensure_tiny

    for kind in args.kinds:
        ensure_tiny(TASKS[kind]["model"].split(":", 1)[1])
    before = os.getloadavg()
    figures: dict[str, Any] = {"rounds": args.rounds, "per_round": args.per_round, "threads": args.threads}
    for kind in args.kinds:
        fig = run_kind(kind, args.rounds, args.per_round, args.threads)
        figures[kind] = fig
        print(f"{kind} ({TASKS[kind]['model']}), {args.rounds} rounds x {args.per_round} per variant:")
        for variant, base in AGAINST.items():
            same = "same output" if fig["same_output_as_off"][variant] else "OTHER output than off"
            print(f"  {variant} vs {base}: {interval(fig[variant])}  ({same})")
    after = os.getloadavg()
    figures["load"] = {"before": before, "after": after, "cpus": os.cpu_count()}
    print(f"load average before {before[0]:.2f} {before[1]:.2f}, after {after[0]:.2f} {after[1]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
