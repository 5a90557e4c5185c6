"""``harness``: validate | schema | exec | expand | run | report | show | compare | bench | bundle | certify | validators | locate | replay | replay-study | tiny.

Every expected failure (bad task, unknown model, corrupted run, locked run) is one line on
stderr and exit code 2; a failed gate is exit code 1; never a traceback for bad input.
Heavy imports (torch) happen inside commands, after the determinism environment is set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from harness.errors import HarnessError
from harness.isa import ISA_NAMES

EXIT_OK, EXIT_GATE, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
MAX_NOTES = 30
JUNIT_HELP = ("also write the verdicts as JUnit XML (one testcase per configuration x judged dimension), "
              "for GitLab, Jenkins and GitHub test reports")


def _quiet_libraries() -> None:
    from harness.hubenv import apply_library_env

    apply_library_env()


def _expected_errors() -> tuple[type[BaseException], ...]:
    from harness.errors import HarnessError
    from harness.engines.audio_io import UnsafePath
    from harness.spec.matrix import MatrixError
    from harness.models.loading import ModelNotFound, UnsupportedConfiguration
    from harness.store.run import StoreError
    from harness.store.safe_output import UnsafeOutput
    from harness.spec.tasks import TaskError

    errors: list[type[BaseException]] = [HarnessError, TaskError, MatrixError, StoreError, ModelNotFound,
                                         UnsupportedConfiguration, UnsafePath, UnsafeOutput]
    return tuple(errors)


def _os_error_line(err: OSError) -> str:
    """An operating-system refusal as one line naming the file (``[Errno 20] Not a directory:
    'x'`` and ``FileExistsError: 'out'`` from making an output's folders named neither well)."""
    if err.filename is None:  # raised with a message of our own ("x: no such report")
        return str(err).strip() or type(err).__name__
    name = err.filename
    if isinstance(err, FileExistsError):  # mkdir(parents=True, exist_ok=True) met a file
        why = "exists and is not a folder"
    elif isinstance(err, NotADirectoryError):
        why = "a part of this path is a file, not a folder"
    else:
        why = err.strerror or type(err).__name__
    other = f" (and {err.filename2})" if err.filename2 is not None else ""
    return f"{name}{other}: {why}"


def _nul_argument(args: argparse.Namespace) -> str | None:
    """The first argument holding a NUL byte: no file name can, and ``open`` says only
    ``embedded null byte``, naming neither the argument nor the file."""
    for name, value in vars(args).items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and "\0" in item:
                return f"argument {name.replace('_', '-')}: {item!r} holds a NUL byte, which no path or name can hold"
    return None


def cmd_validate(args) -> int:
    from harness.spec.lint import lint_task, model_generation_config, model_limits
    from harness.spec.tasks import TaskError, load_task_file

    bad = 0
    for file in args.files:
        try:
            task = load_task_file(file, args.kind)
        except TaskError as err:
            bad += 1
            print(f"INVALID {file}", file=sys.stderr)
            print("\n".join(f"  {line}" for line in str(err).splitlines()), file=sys.stderr)
            continue
        limits = model_limits(task.model) if args.check_model and hasattr(task, "model") else None
        # the seed checks need the model's own generation config (read when the model is here)
        generation = model_generation_config(task.model) if hasattr(task, "model") else None
        warnings = lint_task(task, args.device, limits, generation)
        print(f"OK {file} ({type(task).__name__})" + (f", {len(warnings)} warning(s)" if warnings else ""))
        for w in warnings:
            print(f"  warning: {w}")
    return EXIT_ERROR if bad else EXIT_OK


def cmd_schema(args) -> int:
    from harness.spec.schemas import schema_text, write_schemas

    if args.write:
        for path in write_schemas(Path(args.write)):
            print(path)
        return EXIT_OK
    sys.stdout.write(schema_text(args.kind))
    return EXIT_OK


def cmd_exec(args) -> int:
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
    from harness.store.run import atomic_write_bytes, atomic_write_json
    from harness.spec.tasks import load_task_file, task_kind

    task = load_task_file(args.task, args.kind)
    kind = task_kind(task)
    if args.engine == "node-runner":
        from harness.engines.node_runner import require_runner_packages

        require_runner_packages({kind})
    ex = execute(task, kind, args.device, ModelCache(), threads=args.threads, profile=args.profile,
                 batch_size=args.batch_size, load=args.load, engine=args.engine)
    from harness.execution.env import kernels_in_force

    kernels = kernels_in_force()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
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
        write_wav(path, ex.output.arrays["waveform"], ex.output.sampling_rate)
        written.append(path)
    from harness.store.candidate import write_tokens

    path = out / f"{stem}.tokens.json"  # the discrete output a validator replays (harness replay)
    if write_tokens(path, ex.output.arrays, args.batch_size, args.device):
        written.append(path)
    summary = {"task": str(args.task), "kind": kind, "device": args.device, "digests": digests,
               "timings": ex.timings, "peak_memory_bytes": ex.peak_memory_bytes, "memory_kind": ex.memory_kind,
               "model": ex.model_meta, "output": ex.output.describe(),
               "nondeterministic_warnings": ex.nondeterministic_warnings, "kernels": kernels}
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


def cmd_expand(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from harness.spec.matrix import available_devices, expand, load_matrix

    matrix = load_matrix(args.matrix)
    cells = expand(matrix, available_devices() if args.detect else ["cpu"], **({"max_cells": args.max_cells} if args.max_cells else {}))
    if args.json:
        for c in cells:
            print(json.dumps({"cell_id": c.cell_id, "spec_hash": c.spec_hash, "config_id": c.config_id,
                              "skip_reason": c.skip_reason}))
        return EXIT_OK
    table = Table(title=f"{matrix.spec.name}: {len(cells)} cells")
    for col in ("cell id", "spec hash", "skip reason"):
        table.add_column(col)
    for c in cells:
        table.add_row(c.cell_id, c.spec_hash, c.skip_reason or "")
    Console().print(table)
    return EXIT_OK


def _write_reports(run_dir: Path, formats: list[str], verify: bool = False):
    """Analyse, write the reports, and print their paths and one verdict line per config."""
    from harness.analysis.run import analyze_run
    from harness.report.write import write_reports

    analysis = analyze_run(run_dir, verify_artifacts=verify)
    for path in write_reports(analysis, run_dir, formats):
        print(f"report {path}")
    for line in analysis.summary_lines():
        print(line)
    return analysis


def _write_junit(analysis, path: str | None) -> None:
    """``--junit FILE``: the verdicts as JUnit XML (imported only when asked for)."""
    if not path:
        return
    from harness.report.junit import render_run, write_junit

    print(f"junit {write_junit(Path(path), render_run(analysis))}")


def _print_gates(analysis) -> int:
    failed = [g for g in analysis.gates if not g.passed]
    for g in failed:
        print(f"GATE FAILED {g.config_id}: {g.reason}", file=sys.stderr)
    return EXIT_GATE if failed else EXIT_OK


def cmd_run(args) -> int:
    from harness.spec.matrix import load_matrix
    from harness.execution.runner import RunInterrupted, run_matrix

    matrix = load_matrix(args.matrix)
    if args.junit:  # a target that cannot be written is refused before any cell runs
        from harness.store.safe_output import check_output_target

        check_output_target(Path(args.junit))
    executor = _executor(args)
    try:
        summary = run_matrix(matrix, Path(args.out) if args.out else None, resume=args.resume,
                             progress=not args.no_progress, max_cells=args.max_cells, executor=executor,
                             parallel=args.parallel)
    except RunInterrupted as err:
        print(str(err), file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if executor is not None:
            executor.shutdown()
    for problem in summary.problems[:MAX_NOTES]:
        print(f"note: {problem}", file=sys.stderr)
    print(f"run {summary.run_dir}: {summary.executed} executed, {summary.resumed_skipped} already done; "
          + ", ".join(f"{k} {v}" for k, v in sorted(summary.statuses.items())))
    analysis = _write_reports(summary.run_dir, args.formats, verify=True)
    _write_junit(analysis, args.junit)
    for problem in analysis.problems[:MAX_NOTES]:
        print(f"note: {problem}", file=sys.stderr)
    return _print_gates(analysis)


def _executor(args):
    """None for local processes; for ``--executor ray`` a connected RayExecutor."""
    from harness.execution.ray_executor import FleetError, RayExecutor

    if args.executor == "local":
        if args.address:
            raise FleetError("--address needs --executor ray")
        return None
    executor = RayExecutor(args.address)
    how = "started a local Ray instance" if executor.started_ray and not args.address else "connected to Ray"
    print(f"{how} in {executor.startup_s:.1f} s; {len(executor.alive_nodes())} node(s)", file=sys.stderr)
    return executor


def cmd_report(args) -> int:
    analysis = _write_reports(Path(args.run), args.formats, verify=not args.no_verify)
    _write_junit(analysis, args.junit)
    for problem in analysis.problems[:MAX_NOTES]:  # torn lines, broken evidence: said here, not only in the report
        print(f"note: {problem}", file=sys.stderr)
    if len(analysis.problems) > MAX_NOTES:
        print(f"note: ... and {len(analysis.problems) - MAX_NOTES} more (see the report)", file=sys.stderr)
    return _print_gates(analysis) if args.gate else EXIT_OK


def cmd_show(args) -> int:
    from rich.console import Console

    from harness.analysis.saved import load_analysis
    from harness.report.terminal import show

    show(load_analysis(args.run), Console(width=args.width) if args.width else None)
    return EXIT_OK


def cmd_tiny(args) -> int:
    from harness.models.tiny import TINY_NAMES, tiny_dir, tiny_info

    for name in args.names or TINY_NAMES:
        info = tiny_info(name)
        size = sum(f.stat().st_size for f in tiny_dir(name).rglob("*") if f.is_file())
        print(f"tiny:{name} {info['weights_sha256']} {size / 1e6:.2f} MB {tiny_dir(name)}")
    return EXIT_OK


def _bounded(what: str, low: int, high: int):
    """An argparse type: an integer in [low, high] (``--threads 100000`` exhausted the process
    limit; ``--batch-size 0`` was accepted), refused as a usage error, exit 2."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be {low}..{high}, got {value}")
        return value
    return parse


def _formats(text: str) -> list[str]:
    """An argparse type: report formats, checked before a run starts (``--formats xx`` used to
    fail only after every cell had run)."""
    from harness.report.write import FORMATS

    chosen = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown report format {(unknown or [text])[0]!r}; "
                                         f"expected a comma-separated subset of {', '.join(FORMATS)}")
    return chosen


def _signals_interrupt() -> dict:
    """SIGTERM and SIGHUP end a run like Ctrl-C does (status ``interrupted``, worker killed,
    job files removed); a second signal while that cleanup runs is ignored, so the exit code
    stays 130 instead of the -2 of an interrupted interrupt handler."""
    import signal

    def handler(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                signal.signal(sig, signal.SIG_IGN)
            except (ValueError, OSError):
                pass
        raise KeyboardInterrupt

    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            saved[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread (tests calling main() from a thread)
            pass
    return saved


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    from harness.spec.kinds import KINDS

    kinds = KINDS.names()

    s = sub.add_parser("validate", help="validate task files and print lint warnings")
    s.add_argument("files", nargs="+")
    s.add_argument("--kind", choices=kinds)
    s.add_argument("--device", default="cpu")
    s.add_argument("--check-model", action="store_true", help="read the model config for token limits")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("schema", help="print the JSON Schema of a task kind")
    s.add_argument("kind", nargs="?", default="audio", choices=kinds)
    s.add_argument("--write", metavar="DIR", help="write every schema file into DIR")
    s.set_defaults(func=cmd_schema)

    s = sub.add_parser("exec", help="run one task file and print its digests")
    s.add_argument("task")
    s.add_argument("--kind", choices=kinds)
    s.add_argument("--device", default="cpu")
    s.add_argument("--threads", type=_bounded("threads", 1, 1024))
    s.add_argument("--profile", choices=["on", "off"], default="on")
    s.add_argument("--batch-size", type=_bounded("batch size", 1, 64), default=1)
    s.add_argument("--load", choices=["cold", "warm"], default="cold",
                   help="cold (default): seed, then load the model, as a node's first task; "
                        "warm: load, then seed, as a node serving from its model cache")
    s.add_argument("--engine", choices=["harness", "node-runner"], default="harness",
                   help="node-runner: run the network's own runner package (audio_task / gpt_task)")
    s.add_argument("--isa", choices=ISA_NAMES, default="native", metavar="LEVEL",
                   help=f"CPU kernel level ({', '.join(ISA_NAMES)}): caps ATen, oneDNN and oneMKL before torch "
                        f"starts, emulating another CPU kind; native (default) keeps the environment's")
    s.add_argument("--out", default="out")
    s.set_defaults(func=cmd_exec)

    s = sub.add_parser("expand", help="list the cells of a matrix")
    s.add_argument("matrix")
    s.add_argument("--json", action="store_true")
    s.add_argument("--detect", action="store_true", help="expand device=all with the devices found here")
    s.add_argument("--max-cells", type=_bounded("max cells", 1, 10_000_000))
    s.set_defaults(func=cmd_expand)

    s = sub.add_parser("run", help="run a matrix, write reports, exit 1 when a gate fails")
    s.add_argument("matrix")
    s.add_argument("--out", help="run directory (default reports/runs/<time>-<name>)")
    s.add_argument("--resume", action="store_true")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--max-cells", type=_bounded("max cells", 1, 10_000_000))
    s.add_argument("--formats", type=_formats, default="md,html,json")
    s.add_argument("--parallel", type=_bounded("parallel", 1, 64), metavar="N",
                   help="CPU workers at once (default: the matrix's parallel key, 1); each CUDA device gets its own")
    s.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local worker processes, or a Ray cluster (pip install -e '.[fleet]')")
    s.add_argument("--address", help="Ray cluster to use: auto or HOST:PORT (default: start a local Ray instance)")
    s.add_argument("--junit", metavar="FILE", help=JUNIT_HELP)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("report", help="(re)write a run's reports")
    s.add_argument("run")
    s.add_argument("--formats", type=_formats, default="md,html,json")
    s.add_argument("--gate", action="store_true", help="exit 1 when a gate fails")
    s.add_argument("--no-verify", action="store_true", help="do not re-hash every artifact against its record")
    s.add_argument("--junit", metavar="FILE", help=JUNIT_HELP)
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("show", help="print a run's verdicts, verdict map and top findings in the terminal")
    s.add_argument("run", help="run directory (its report.json, else its records) or a report.json")
    s.add_argument("--width", type=_bounded("width", 20, 10_000), help="terminal width in columns (default: detected)")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("tiny", help="build the tiny models and print their weight hashes")
    s.add_argument("names", nargs="*")
    s.set_defaults(func=cmd_tiny)
    from harness.cli.cert import register as register_certification

    register_certification(sub)  # bundle, certify, validators, compare, bench
    from harness.cli.trust import register as register_trust

    register_trust(sub)  # keygen, verify

    from harness.cli.locate import register as register_locate

    register_locate(sub)  # locate
    from harness.cli.replay import register as register_replay

    register_replay(sub)  # replay, replay-study
    return p


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    refused = _nul_argument(args)
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return EXIT_ERROR
    saved = _signals_interrupt() if args.command in ("run", "certify") else {}
    try:
        return _dispatch(args)
    finally:
        import signal

        for sig, old in saved.items():
            signal.signal(sig, old)


def _dispatch(args) -> int:
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _expected_errors() as err:
        text = str(err).strip() or type(err).__name__
        lines = text.splitlines()
        print(f"error: {lines[0]}", file=sys.stderr)
        for line in lines[1:20]:
            print(f"  {line}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as err:
        if os.environ.get("HARNESS_DEBUG") == "1":
            raise
        print(f"error: {_os_error_line(err)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as err:  # an engine or library refusing the task: one line, not a traceback
        if os.environ.get("HARNESS_DEBUG") == "1":
            raise
        print(f"error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
              f"(HARNESS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
