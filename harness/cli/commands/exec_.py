"""``harness exec TASK``: run one task file as a node would and write its result and digests.

The module is ``exec_`` because ``exec`` is a builtin; the command is ``exec``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.cli.arguments import add_device, add_kind, bounded
from harness.cli.common import EXIT_OK
from harness.errors import HarnessError
from harness.isa import ISA_CHOICES

NAME = "exec"


def setup_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    s = sub.add_parser(NAME, help="run one task file and print its digests")
    s.add_argument("task")
    add_kind(s)
    add_device(s)
    s.add_argument("--threads", type=bounded("threads", 1, 1024))
    s.add_argument("--profile", choices=["on", "off"], default="on")
    s.add_argument("--batch-size", type=bounded("batch size", 1, 64), default=1)
    s.add_argument(
        "--load",
        choices=["cold", "warm"],
        default="cold",
        help="cold (default): seed, then load the model, as a node's first task; "
        "warm: load, then seed, as a node serving from its model cache",
    )
    s.add_argument(
        "--engine",
        choices=["harness", "node-runner"],
        default="harness",
        help="node-runner: run the network's own runner package (audio_task / gpt_task)",
    )
    s.add_argument(
        "--isa",
        choices=ISA_CHOICES,
        default="native",
        metavar="LEVEL",
        help=f"CPU kernel level ({', '.join(ISA_CHOICES)}): caps ATen, oneDNN and oneMKL before torch "
        f"starts, emulating another CPU kind; native (default) keeps the environment's",
    )
    s.add_argument("--out", default="out")
    return s


def run(args: argparse.Namespace) -> int:
    from harness.determinism import apply_environment
    from harness.isa import unavailable
    from harness.spec.matrix import device_problem

    problem = device_problem(args.device, allow_all=False)
    if problem:
        raise HarnessError(f"argument --device: {problem}")
    why = unavailable(args.isa)
    if why:
        raise HarnessError(f"argument --isa: {why}")
    apply_environment(args.profile, isa=args.isa)  # before torch starts
    from harness.engines.audio_io import write_wav
    from harness.engines.base import ModelCache
    from harness.execution.execute import execute
    from harness.spec.tasks import load_task_file, task_kind
    from harness.store.run import atomic_write_bytes, atomic_write_json

    task = load_task_file(args.task, args.kind)
    kind = task_kind(task)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # before the task runs: a bad --out must not cost its result
    if args.engine == "node-runner":
        from harness.engines.node_runner import require_runner_packages

        require_runner_packages({kind})
    ex = execute(
        task,
        kind,
        args.device,
        ModelCache(),
        threads=args.threads,
        profile=args.profile,
        batch_size=args.batch_size,
        load=args.load,
        engine=args.engine,
    )
    from harness.execution.env import kernels_in_force

    kernels = kernels_in_force()
    stem = Path(args.task).stem
    digests = ex.output.digests()
    written = []
    if ex.output.response is not None:
        # the bytes a node sends: crynux-worker serialises run_task's result with json.dumps(resp)
        path = out / f"{stem}.response.json"
        atomic_write_bytes(path, json.dumps(ex.output.response).encode("utf-8"))
        written.append(path)
    if "waveform" in ex.output.arrays:
        path = out / f"{stem}.wav"
        rate = ex.output.sampling_rate
        if rate is None:  # a WAV file needs its rate; refused in one line, not a library's TypeError
            raise HarnessError(f"{args.task}: the engine returned a waveform without a sampling rate")
        write_wav(path, ex.output.arrays["waveform"], rate)
        written.append(path)
    from harness.store.candidate import write_tokens

    path = out / f"{stem}.tokens.json"  # the discrete output a validator replays (harness replay)
    if write_tokens(path, ex.output.arrays, args.batch_size, args.device):
        written.append(path)
    summary = {
        "task": str(args.task),
        "kind": kind,
        "device": args.device,
        "digests": digests,
        "timings": ex.timings,
        "peak_memory_bytes": ex.peak_memory_bytes,
        "memory_kind": ex.memory_kind,
        "model": ex.model_meta,
        "output": ex.output.describe(),
        "nondeterministic_warnings": ex.nondeterministic_warnings,
        "kernels": kernels,
    }
    atomic_write_json(out / f"{stem}.digests.json", summary)
    for path in written:
        print(f"wrote {path}")
    print(f"output  sha256 {digests.get('output')}")
    if "tokens" in digests:
        print(f"tokens  sha256 {digests['tokens']}")
    t = ex.timings
    print("timings " + " ".join(f"{k}={v:.3f}" for k, v in t.items()))
    print(f"peak memory {ex.peak_memory_bytes / 2**20:.1f} MiB ({ex.memory_kind})")
    print(f"kernels {kernels['class']} (isa {kernels['isa']}; BLAS: {kernels['blas'] or 'unknown'})")
    return EXIT_OK
