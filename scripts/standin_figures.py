"""Do the stand-ins behave like trained models? Per generation step: entropy, top-1, near-ties.

For each model (the random tiny ones and the trained stand-ins) the smoke task of
``matrices/tasks/<prefix>-{musicgen-pop,gpt2-chatbot}.json`` is generated with seeds 42..42+n-1
(float32, 1 thread), and at every step the distribution the pick is made from is measured:

- GPT-2: the raw next-token logits (temperature 1, before top-k);
- MusicGen: the classifier-free-guided logits, ``uncond + g * (cond - uncond)`` (what
  MusicGen's guidance processor hands the sampler; guidance alone sharpens a distribution, so
  the conditional logits, the model's own, are reported too), one distribution per codebook,
  steps the delay pattern forces to padding left out.

Figures: mean entropy in nats (log V is a uniform distribution's), mean top-1 probability,
and the share of steps whose top two logits are within a replay margin: the default
``harness.spec.policy.REPLAY_MARGIN`` and the calibrated bfloat16 margin of
``docs/replay-calibration.json``. Means carry a 95 % t interval over seeds (steps within one
sequence are not independent); shares a Wilson interval over steps.

Usage: ``nice -n 5 python scripts/standin_figures.py [--seeds 5] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
MODELS = (  # (ref, smoke task file, which logits)
    ("tiny:gpt2", "tiny-gpt2-chatbot", "raw"),
    ("standin:gpt2", "standin-gpt2-chatbot", "raw"),
    ("tiny:musicgen", "tiny-musicgen-pop", "guided"),
    ("standin:musicgen", "standin-musicgen-pop", "guided"),
    ("tiny:musicgen", "tiny-musicgen-pop", "conditional"),
    ("standin:musicgen", "standin-musicgen-pop", "conditional"),
)


def bf16_margin() -> float:
    doc = json.loads((REPO / "docs" / "replay-calibration.json").read_text())
    return max(e["replay_margin"] for e in doc["entries"] if e["scope"]["dtype"] == "bfloat16")


def step_logits_gpt(path: str, task_file: str, seed: int, view: str) -> torch.Tensor:
    """(steps, V) raw next-token logits of one generation of the smoke task."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.engines.textgen import render_prompt
    from harness.spec.tasks import parse_task

    task = parse_task(json.loads((REPO / "matrices" / "tasks" / f"{task_file}.json").read_text()))
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    enc = tok([render_prompt(tok, task)], return_tensors="pt")
    gen = task.generation_config.model_dump(exclude_none=True) if task.generation_config else {}
    torch.manual_seed(seed)
    out = model.generate(
        **enc,
        **gen,
        pad_token_id=tok.eos_token_id,
        output_logits=True,
        return_dict_in_generate=True,
    )
    return torch.cat([step[:1] for step in out.logits]).float()


def step_logits_musicgen(path: str, task_file: str, seed: int, view: str) -> torch.Tensor:
    """(valid steps x codebooks, V) guided logits of one generation of the smoke task."""
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    doc = json.loads((REPO / "matrices" / "tasks" / f"{task_file}.json").read_text())
    model = MusicgenForConditionalGeneration.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
    proc = AutoProcessor.from_pretrained(path, local_files_only=True)
    enc = proc(text=[doc["prompt"]], padding=True, return_tensors="pt")
    gen = dict(doc["generation_config"])
    scale = float(gen.get("guidance_scale") or 1.0)
    torch.manual_seed(seed)
    out = model.generate(**enc, **gen, output_logits=True, return_dict_in_generate=True)
    k = model.decoder.num_codebooks
    steps = len(out.logits)
    rows = []
    for s, raw in enumerate(out.logits):  # raw: (2 * k, V) with guidance (cond rows first), else (k, V)
        raw = raw.float()
        guided = raw[k:] + scale * (raw[:k] - raw[k:]) if scale > 1 and raw.shape[0] == 2 * k else raw[:k]
        guided = raw[:k] if view == "conditional" else guided
        for c in range(k):
            if c <= s <= steps - k + c:  # the delay pattern forces padding elsewhere
                rows.append(guided[c])
    return torch.stack(rows)


def measure(ref: str, task_file: str, view: str, seeds: list[int], margins: dict[str, float]) -> dict:
    from scipy import stats

    from harness.models.loading import resolve_model

    path = resolve_model(ref).path
    fn = step_logits_musicgen if "musicgen" in ref else step_logits_gpt
    per_seed: list[dict[str, float]] = []
    gaps: list[np.ndarray] = []
    vocab = 0
    for seed in seeds:
        logits = fn(path, task_file, seed, view)
        finite = torch.isfinite(logits)
        logits = torch.where(finite, logits, torch.tensor(-1e9))
        vocab = int(finite[0].sum())
        logp = torch.log_softmax(logits, -1)
        p = logp.exp()
        entropy = -(p * logp).sum(-1)
        top2 = logits.topk(2, -1).values
        gaps.append((top2[:, 0] - top2[:, 1]).numpy())
        per_seed.append({"entropy": float(entropy.mean()), "top1": float(p.max(-1).values.mean())})
    row: dict = {"model": ref, "logits": view, "vocab": vocab, "log_v": math.log(vocab), "seeds": len(seeds)}
    for key in ("entropy", "top1"):
        values = np.array([s[key] for s in per_seed])
        half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
        row[key] = {
            "mean": float(values.mean()),
            "low": float(values.mean() - half),
            "high": float(values.mean() + half),
        }
    all_gaps = np.concatenate(gaps)
    row["steps"] = len(all_gaps)
    row["median_top2_gap"] = float(np.median(all_gaps))
    for name, margin in margins.items():
        k = int((all_gaps <= margin).sum())
        ci = stats.binomtest(k, len(all_gaps)).proportion_ci(method="wilson")
        row[f"within_{name}"] = {
            "margin": margin,
            "steps": k,
            "share": k / len(all_gaps),
            "low": ci.low,
            "high": ci.high,
        }
    return row


def table(rows: list[dict]) -> str:
    names = [k.removeprefix("within_") for k in rows[0] if k.startswith("within_")]
    head = "| model | logits | steps | mean entropy (nats) / log V | mean top-1 p | median top-2 gap | " + " | ".join(
        f"top-2 within {n} ({rows[0]['within_' + n]['margin']:.3g})" for n in names
    )
    lines = [head + " |", "|" + " --- |" * (6 + len(names))]
    for r in rows:
        e, t = r["entropy"], r["top1"]
        cells = [
            f"`{r['model']}`",
            r["logits"],
            str(r["steps"]),
            f"{e['mean']:.2f} [{e['low']:.2f}, {e['high']:.2f}] / {r['log_v']:.2f}",
            f"{t['mean']:.3f} [{t['low']:.3f}, {t['high']:.3f}]",
            f"{r['median_top2_gap']:.3g}",
        ]
        for n in names:
            w = r["within_" + n]
            cells.append(f"{100 * w['share']:.1f} % [{100 * w['low']:.1f}, {100 * w['high']:.1f}] ({w['steps']})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    from harness.spec.policy import REPLAY_MARGIN

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    margins = {"default": REPLAY_MARGIN, "bfloat16": bf16_margin()}
    seeds = list(range(42, 42 + args.seeds))
    rows = [measure(ref, task, view, seeds, margins) for ref, task, view in MODELS]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
