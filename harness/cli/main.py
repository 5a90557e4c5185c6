"""The ``harness`` command line: the parser, built from the command modules, and the exit codes.

Every expected failure (bad task, unknown model, corrupted run, locked run) is one line on
stderr and exit code 2; a failed gate is exit code 1; never a traceback for bad input.
Heavy imports (torch) happen inside commands, after the determinism environment is set.
This module builds the parser from the command modules (harness.cli.commands, one command
each) and maps what a command raises to those exit codes; it holds no command of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import textwrap
from collections.abc import Callable, Generator
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

from harness.cli.arguments import add_commands
from harness.cli.commands import (
    bench,
    bundle,
    calibrate,
    certify,
    compare,
    exec_,
    expand,
    keygen,
    locate,
    replay,
    report,
    run,
    schema,
    show,
    tiny,
    validate,
    verify,
)
from harness.cli.common import EXIT_ERROR, EXIT_INTERRUPTED

if TYPE_CHECKING:
    import signal

    #: what ``signal.signal`` takes and gives back (typeshed's ``signal._HANDLER``; the handler's
    #: return value is ignored, hence Any)
    _Handler: TypeAlias = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

#: what ``harness --help`` says the tool is
DESCRIPTION = (
    "Reproducibility verification and benchmarking for decentralized AI inference: run the network's "
    "task documents across configurations and machines, and say with evidence whether nodes would agree."
)
#: the commands by purpose, in the order ``harness --help`` lists them: a new command is a module
#: and a line here (the docs site's command reference is generated from this table)
GROUPS = (
    ("tasks and models", (validate, schema, exec_, tiny)),
    ("run a matrix and read its report", (expand, run, report, show)),
    ("compare runs and certify machines", (compare, bench, bundle, certify, keygen, verify)),
    ("investigate and calibrate", (calibrate, locate, replay)),
)
COMMANDS = tuple(module for _, modules in GROUPS for module in modules)
BY_NAME = {module.NAME: module for module in COMMANDS}
#: commands that were replaced, and by what (one line instead of argparse's "invalid choice")
RETIRED = {
    "validators": "a calibration is derived from runs now: harness run matrices/studies/tiny-musicgen.toml, then "
    "harness calibrate RUN --rule composite --out FILE [--report DIR] (docs/calibration.md)",
    "replay-study": "a calibration is derived from runs now: harness run a study matrix, then "
    "harness calibrate RUN --rule replay --out FILE [--report DIR] (docs/calibration.md)",
}


def _quiet_libraries() -> None:
    from harness.hubenv import apply_library_env

    apply_library_env()


def _expected_errors() -> tuple[type[BaseException], ...]:
    from harness.engines.audio_io import UnsafePath
    from harness.errors import HarnessError
    from harness.models.loading import ModelNotFound, UnsupportedConfiguration
    from harness.spec.matrix import MatrixError
    from harness.spec.tasks import TaskError
    from harness.store.run import StoreError
    from harness.store.safe_output import UnsafeOutput

    errors: list[type[BaseException]] = [
        HarnessError,
        TaskError,
        MatrixError,
        StoreError,
        ModelNotFound,
        UnsupportedConfiguration,
        UnsafePath,
        UnsafeOutput,
    ]
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


def _signals_interrupt() -> dict[signal.Signals, _Handler]:
    """SIGTERM and SIGHUP end a run like Ctrl-C does (status ``interrupted``, worker killed,
    job files removed); a second signal while that cleanup runs is ignored, so the exit code
    stays 130 instead of the -2 of an interrupted interrupt handler."""
    import signal

    def handler(signum: int, frame: FrameType | None) -> NoReturn:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    saved: dict[signal.Signals, _Handler] = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            saved[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread (tests calling main() from a thread)
            pass
    return saved


class _GroupedHelp(argparse.RawDescriptionHelpFormatter):
    """``harness --help`` lists the commands once, by purpose (the epilog), not again as one flat
    list under the positional argument."""

    def _iter_indented_subactions(self, action: argparse.Action) -> Generator[argparse.Action, None, None]:
        if isinstance(action, argparse._SubParsersAction):
            return
        yield from super()._iter_indented_subactions(action)


def _grouped_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> str:
    said = {choice.dest: choice.help or "" for choice in sub._choices_actions}
    width = max(len(name) for name in said) + 2
    lines = []
    for title, modules in GROUPS:
        lines.append(f"{title}:")
        lines += [f"  {module.NAME:<{width}}{said[module.NAME]}" for module in modules]
        lines.append("")
    lines.append("exit codes: 0 fine, 1 a gate failed, 2 bad input (one line 'error: ...'), 130 interrupted")
    lines.append("'harness COMMAND --help' says more; the docs site's command reference lists every option.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="harness", description=textwrap.fill(DESCRIPTION, 100), formatter_class=_GroupedHelp
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of the commands below")
    add_commands(sub, COMMANDS)
    p.epilog = _grouped_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in RETIRED:
        print(f"error: harness {argv[0]} is retired: {RETIRED[argv[0]]}", file=sys.stderr)
        return EXIT_ERROR
    parser = build_parser()
    args = parser.parse_args(argv)
    refused = _nul_argument(args)
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return EXIT_ERROR
    saved = _signals_interrupt() if getattr(BY_NAME[args.command], "INTERRUPTIBLE", False) else {}
    try:
        return _dispatch(args)
    finally:
        import signal

        for sig, old in saved.items():
            signal.signal(sig, old)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        code: int = args.func(args)  # a command's run (harness.cli.arguments.Command)
        return code
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
        print(
            f"error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
            f"(HARNESS_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
