"""The arguments several commands share, spelt once: their argparse types and their adders.

A flag that two commands spell alike (``--formats``, ``--junit``, ``--max-cells``, ``--check``)
is added here, so its type, default and check cannot drift between them; where the commands'
help texts differ, the adder takes the text. Types refuse bad values as usage errors (exit 2)
before anything runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Protocol

JUNIT_HELP = (
    "also write the verdicts as JUnit XML (one testcase per configuration x judged dimension), "
    "for GitLab, Jenkins and GitHub test reports"
)


class Command(Protocol):
    """What a command module (harness.cli.commands) holds: its name, its parser, its run."""

    NAME: str

    def setup_arguments(self, sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser: ...

    def run(self, args: argparse.Namespace) -> int: ...


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], modules: Iterable[Command]) -> None:
    """Each command module adds its parser (``setup_arguments``) and is run by its ``run``."""
    for module in modules:
        module.setup_arguments(sub).set_defaults(func=module.run)


# --- types ---------------------------------------------------------------------------------------


def bounded(what: str, low: int, high: int) -> Callable[[str], int]:
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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def formats(text: str) -> list[str]:
    """An argparse type: report formats, checked before a run starts (``--formats xx`` used to
    fail only after every cell had run)."""
    from harness.report.run import FORMATS

    chosen = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown report format {(unknown or [text])[0]!r}; "
            f"expected a comma-separated subset of {', '.join(FORMATS)}"
        )
    return chosen


def match_mode(text: str) -> str:
    from harness.analysis.crossrun import CrossRunError, parse_match

    try:
        parse_match(text)
    except CrossRunError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def cost_check(text: str) -> str:
    """An argparse type: a cost check (``significant``, ``median:10%``), refused before anything runs."""
    from harness.analysis.bench import parse_check

    try:
        parse_check(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def min_effect(text: str) -> float:
    from harness.analysis.significance import parse_min_effect

    try:
        return parse_min_effect(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def node_version(text: str) -> str:
    from harness.workflows.whitelist import normalize_node_version

    try:
        return normalize_node_version(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# --- adders --------------------------------------------------------------------------------------


def kind_names() -> list[str]:
    """The task kinds registered now (``HARNESS_KINDS`` included): the choices of a kind argument."""
    from harness.spec.kinds import KINDS

    return KINDS.names()


def add_kind(s: argparse.ArgumentParser) -> None:
    s.add_argument("--kind", choices=kind_names())


def add_device(s: argparse.ArgumentParser) -> None:
    s.add_argument("--device", default="cpu")


def add_max_cells(s: argparse.ArgumentParser) -> None:
    s.add_argument("--max-cells", type=bounded("max cells", 1, 10_000_000))


def add_formats(s: argparse.ArgumentParser) -> None:
    s.add_argument("--formats", type=formats, default="md,html,json")


def add_junit(s: argparse.ArgumentParser, help: str = JUNIT_HELP) -> None:
    s.add_argument("--junit", metavar="FILE", help=help)


def add_no_progress(s: argparse.ArgumentParser) -> None:
    s.add_argument("--no-progress", action="store_true")


def add_sign(s: argparse.ArgumentParser, help: str) -> None:
    s.add_argument("--sign", metavar="KEY", help=help)


def add_trusted_keys(s: argparse.ArgumentParser, help: str) -> None:
    s.add_argument("--trusted-keys", metavar="FILE", help=help)


def add_executor(s: argparse.ArgumentParser, help: str) -> None:
    """``--executor`` (the executors registered in harness.execution.executors) and ``--address``
    (the Ray cluster): where a command's workers run."""
    from harness.execution.executors import names

    s.add_argument("--executor", choices=names(), default="local", help=help)
    s.add_argument("--address", help="Ray cluster to use: auto or HOST:PORT (default: start a local Ray instance)")


def add_cost_options(s: argparse.ArgumentParser) -> None:
    """``--check`` and ``--min-effect``: the cost regression checks of ``compare`` and ``bench``."""
    s.add_argument(
        "--check",
        action="append",
        nargs="?",
        const="significant",
        type=cost_check,
        metavar="EXPR",
        help="cost regression check (repeatable; exit 1 when one fails): significant (the default of a "
        "bare --check: a slowdown a Mann-Whitney U test over the per-execution latencies calls "
        "significant at 95%%), or a threshold on the summary numbers alone, e.g. median:10%%",
    )
    s.add_argument(
        "--min-effect",
        type=min_effect,
        default=0.0,
        metavar="PCT",
        help="a significant change smaller than this (e.g. 5%%) is reported as not significant",
    )
