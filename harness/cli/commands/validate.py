"""``harness validate FILE...``: load task files and print their lint warnings, or load matrices
(``.toml``: their task files and calibration files with them); exit 2 when one is invalid."""

from __future__ import annotations

import argparse
import sys

from harness.cli.arguments import add_device, add_kind
from harness.cli.common import EXIT_ERROR, EXIT_OK

NAME = "validate"


def setup_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    s = sub.add_parser(NAME, help="validate task files (and matrices: .toml) and print lint warnings")
    s.add_argument("files", nargs="+")
    add_kind(s)
    add_device(s)
    s.add_argument("--check-model", action="store_true", help="read the model config for token limits")
    return s


def run(args: argparse.Namespace) -> int:
    from harness.spec.lint import lint_task, model_generation_config, model_limits
    from harness.spec.tasks import TaskError, load_task_file

    bad = 0
    for file in args.files:
        if file.endswith(".toml"):
            bad += not _matrix_ok(file)
            continue
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


def _matrix_ok(file: str) -> bool:
    """A matrix loads (its tasks, calibrations and axes checked) and expands into cells."""
    from harness.errors import HarnessError
    from harness.spec.matrix import expand, load_matrix

    try:
        matrix = load_matrix(file)
        cells = expand(matrix, ["cpu", "cuda"])
    except HarnessError as err:
        print(f"INVALID {file}", file=sys.stderr)
        print("\n".join(f"  {line}" for line in str(err).splitlines()), file=sys.stderr)
        return False
    print(f"OK {file} (matrix {matrix.spec.name}: {len(matrix.tasks)} task(s), {len(cells)} cell(s))")
    return True
