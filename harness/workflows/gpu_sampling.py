"""Can a device's sampling be replayed? The GPU proof's ``sampling`` step, rehearsed on the CPU.

Why: the replay rule regenerates a sampled step's draws from the seed (``harness.engines.draws``:
``torch.multinomial(p, 1)`` is ``argmax(p / E)`` with ``E = empty_like(p).exponential_(1)``).
That was measured on the CPU only. ATen's one-sample path is device-generic in the source
(``aten/src/ATen/native/Distributions.cpp``, ``multinomial``: "Fast-path for no replacement or
if only one sample is drawn", ``q = at::empty_like(self).exponential_(1, gen)``, then
``argmax(self / q)``), but the CUDA generator is Philox, whose offsets depend on the launch, so
whether the stream can be regenerated, and in which conditions, is a measurement, not a
reading. Three questions, each answered with counts:

1. ``kernel``: on the device, does ``multinomial(p, 1, generator=g)`` equal ``argmax(p / E)``
   with ``E`` drawn from a generator in the same state, row for row?
2. ``generate``: in a real ``generate`` (tiny MusicGen through the harness engine, seeded as a
   node seeds), do draws regenerated from a fresh generator of the device, seeded alike, predict
   every token the run sampled? (``torch.multinomial`` is wrapped to record each step's
   probabilities and picks; the regenerated draws are checked against them afterwards.)
3. ``processes``: are the recorded picks and the regenerated draws the same bytes in two fresh
   processes for the same seed and shape?

The fourth question, whether ``harness replay`` accepts an honest candidate made on the device,
is asked by the proof script itself (``harness exec`` then ``harness replay``); its answer is
recorded beside these figures.

``python -m harness.workflows.gpu_sampling record --device cuda:0 --json R`` records one
generation (run twice, each a fresh process: the proof script does), then ``measure --device
cuda:0 --records R1 R2 --json FILE`` runs the kernel check and compares them; on a CPU
(``--device cpu``) it is the rehearsal, and every answer is expected to be yes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from harness.engines.draws import pick

#: the shapes of the kernel check: (rows, vocabulary); MusicGen's 4 codebooks x 2 (guidance) and
#: GPT-2's vocabulary among them
KERNEL_SHAPES = ((4, 2048), (8, 2048), (1, 50257), (16, 256))
KERNEL_STEPS = 8
TASK = Path(__file__).resolve().parents[2] / "matrices" / "tasks" / "tiny-musicgen-pop.json"


def _generator(device: str, seed: int) -> Any:
    import torch

    return torch.Generator(device=device).manual_seed(seed)


def kernel_check(device: str, seed: int = 11) -> dict[str, Any]:
    """Rows where ``multinomial(p, 1)`` and ``argmax(p / E)`` pick the same token, per shape."""
    import torch

    shapes = []
    for rows, vocab in KERNEL_SHAPES:
        logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(7)) * 3
        probs = torch.softmax(logits, dim=-1).to(device)
        a, b = _generator(device, seed), _generator(device, seed)
        equal = 0
        for _ in range(KERNEL_STEPS):
            picked = torch.multinomial(probs, 1, generator=a).squeeze(1)
            regen = pick(probs, torch.empty_like(probs).exponential_(1, generator=b))
            equal += int((picked == regen).sum())
        shapes.append({"rows": rows, "vocab": vocab, "steps": KERNEL_STEPS, "equal": equal, "of": rows * KERNEL_STEPS})
    return {"shapes": shapes, "equal": all(s["equal"] == s["of"] for s in shapes)}


def _digest(tensors: list[Any]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def record_generation(device: str, task_path: Path = TASK) -> dict[str, Any]:
    """One seeded generation with every ``torch.multinomial`` call recorded, and how many of its
    picks draws regenerated from the seed on ``device`` predict."""
    from unittest import mock

    import torch

    from harness.determinism import apply_runtime
    from harness.spec.kinds import KINDS
    from harness.spec.tasks import ChainTask, load_task_file, task_kind

    apply_runtime("on", threads=1)
    task = load_task_file(task_path)
    if isinstance(task, ChainTask):  # two stages, two seeds: not one generation to record
        raise ValueError(f"{task_path}: a chain task; the sampling step records one generation")
    engine = KINDS.engine(task_kind(task))
    loaded = engine.load(task, device)
    steps: list[tuple[Any, Any]] = []
    real = torch.multinomial

    def recording(probs: Any, num_samples: int, *args: Any, **kwargs: Any) -> Any:
        out = real(probs, num_samples, *args, **kwargs)
        steps.append((probs.detach().clone(), out.detach().clone()))
        return out

    # generate looks the function up on the module at call time
    with mock.patch.object(torch, "multinomial", recording):
        engine.run(loaded, task, device)  # seeds just before generating, as a serving node does
    g = _generator(device, int(task.seed))
    draws, agree, rows = [], 0, 0
    for probs, picked in steps:
        e = torch.empty_like(probs, dtype=torch.float32).exponential_(1, generator=g)
        draws.append(e)
        agree += int((pick(probs, e) == picked.squeeze(-1)).sum())
        rows += picked.shape[0]
    return {
        "device": device,
        "task": task_path.name,
        "steps": len(steps),
        "rows": rows,
        "predicted": agree,
        "picks_sha256": _digest([p for _, p in steps]),
        "draws_sha256": _digest(draws),
    }


def measure(device: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """All three answers for ``device``: the kernel check here, and the generation recorded in
    two fresh processes (``record`` mode, started by the proof script like its other steps:
    no module but the executors starts processes)."""
    first, second = (records + [{"error": "not recorded"}] * 2)[:2]
    same = (
        "error" not in first
        and "error" not in second
        and first["picks_sha256"] == second["picks_sha256"]
        and first["draws_sha256"] == second["draws_sha256"]
    )
    return {
        "device": device,
        "kernel": kernel_check(device),
        "generate": first,
        "second_process": second,
        "processes_identical": same,
    }


def render(doc: dict[str, Any]) -> list[str]:
    """The summary's lines for this step (the proof's summary.md includes them)."""
    k, g = doc["kernel"], doc["generate"]
    lines = [
        f"- multinomial(p, 1) = argmax(p / E) on {doc['device']}: "
        + ", ".join(f"{s['equal']}/{s['of']} rows at {s['rows']}x{s['vocab']}" for s in k["shapes"]),
    ]
    if "error" in g:
        lines.append(f"- seeded generation: {g['error']}")
    else:
        lines.append(
            f"- seeded generation ({g['task']}): draws regenerated from the seed on {doc['device']} predict "
            f"{g['predicted']}/{g['rows']} sampled rows over {g['steps']} steps"
        )
    lines.append(
        "- two fresh processes, same seed: picks and draws "
        + ("byte-identical" if doc["processes_identical"] else "differ (or a process failed)")
    )
    if doc.get("replay"):
        lines.append(f"- harness replay of an honest candidate made on {doc['device']}: {doc['replay']}")
    return lines


def _read_record(path: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return {"error": f"{path}: {err}"}
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.workflows.gpu_sampling", description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("record", "measure"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="where to write the record (record) or the measurement (measure)")
    p.add_argument("--records", type=Path, nargs="*", default=[], help="measure: two records from fresh processes")
    p.add_argument("--replay", help="the first line harness replay printed for a candidate made on the device")
    args = p.parse_args(argv)
    from harness.store.files import atomic_write_json

    if args.mode == "record":
        from harness.determinism import apply_environment

        apply_environment("on")  # before torch starts: CUBLAS_WORKSPACE_CONFIG, TF32 off
        record = record_generation(args.device)
        if args.json:
            atomic_write_json(args.json, record)
        print(json.dumps(record))
        return 0
    doc = measure(args.device, [_read_record(r) for r in args.records])
    if args.replay:
        doc["replay"] = args.replay
    if args.json:
        atomic_write_json(args.json, doc)
    print("\n".join(render(doc)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
