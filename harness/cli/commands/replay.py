"""``harness replay TASK CANDIDATE_DIR``: check a candidate's output against the task.

Anyone can re-run a replay from three things: the task document, the candidate's result folder
(``harness exec --out DIR`` writes the WAV or response and ``STEM.tokens.json``) and the model.
The candidate sends no logits and no margins. The replay is a job of the executor (a local
worker process, or Ray with ``--executor ray``), as every model execution of the harness is.
Exit 0: accepted; 1: rejected or not replayable (never accepted by default); 2: bad input
(one line).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from harness.cli.arguments import add_executor, add_trusted_keys
from harness.cli.common import EXIT_FAIL, EXIT_OK

if TYPE_CHECKING:
    from harness.spec.policy import Thresholds
    from harness.spec.tasks import Task

NAME = "replay"


def setup_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    s = sub.add_parser(
        NAME,
        help="check a candidate's output against the task: every token the seed's, "
        "near-ties within the calibrated margin, the result built from them",
    )
    s.add_argument("task", help="the task document (JSON)")
    s.add_argument("candidate", help="the candidate's result folder (harness exec --out DIR writes it)")
    s.add_argument("--stem", help="which result in the folder (STEM.tokens.json; default: the only one)")
    s.add_argument(
        "--matrix",
        metavar="M",
        help="take the thresholds (replay margins, decoder bounds) from this matrix, or from the replay "
        "calibration it names for this task's configuration",
    )
    s.add_argument(
        "--margin",
        type=float,
        help="the largest gap a flipped near-tie may have (logit units, at most 1.0); labelled uncalibrated",
    )
    add_trusted_keys(s, "a calibration the matrix names must be signed by one of these keys")
    s.add_argument(
        "--start",
        choices=["either", "warm", "cold"],
        default="either",
        help="the generator start a node may have had: seeded before generating (warm), before loading "
        "(cold), or either (default)",
    )
    s.add_argument(
        "--path",
        choices=["auto", "one-pass", "stepwise"],
        default="auto",
        help="one teacher-forced pass, forced generation, or auto (default)",
    )
    add_executor(s, help="where the replay runs: a local worker process (default) or a Ray cluster")
    s.add_argument("--json", action="store_true", help="print the decision as JSON")
    return s


def _thresholds(args: argparse.Namespace, task: Task, kind: str) -> tuple[Thresholds, str, str | None]:
    """The thresholds a replay verdict uses and where its margin comes from: the replay
    calibration the matrix names for this task's configuration, else the matrix's (or the
    default) thresholds, else ``--margin``; the last two are labelled uncalibrated. A margin above
    MAX_REPLAY_MARGIN is refused (docs/trust.md); a calibration without an entry for the task
    decides nothing (None, the reason)."""
    import math

    from harness.errors import HarnessError
    from harness.spec.calibration import MAX_REPLAY_MARGIN, Facts, new_tokens_asked
    from harness.spec.kinds import KINDS
    from harness.spec.policy import Policy, Thresholds, config_policy, margin_source
    from harness.spec.tasks import task_to_doc

    if args.margin is not None:
        if not (math.isfinite(args.margin) and 0 <= args.margin <= MAX_REPLAY_MARGIN):
            raise HarnessError(
                f"argument --margin: {args.margin} is not a margin: it must be finite, 0..{MAX_REPLAY_MARGIN} "
                f"logit units (the ceiling: docs/trust.md)"
            )
        thr = Thresholds()
        if args.matrix:
            from harness.spec.matrix import load_matrix

            thr = load_matrix(args.matrix, args.trusted_keys).spec.thresholds
        return (
            thr.model_copy(update={"replay_margin": args.margin, "replay_dtypes": {}}),
            ("uncalibrated: --margin"),
            None,
        )
    if not args.matrix:
        return Thresholds(), "uncalibrated: the default margin, no calibration file", None
    from harness.spec.matrix import load_matrix

    spec = load_matrix(args.matrix, args.trusted_keys).spec
    doc = task_to_doc(task)
    settings = KINDS.get(kind).task_settings(doc)
    facts = Facts(  # what the task says; the candidate's kernels are not known, so not checked
        kind=kind,
        model=KINDS.get(kind).model_of(doc),
        dtype=settings["dtype"],
        quantize_bits=settings["quantize_bits"],
        new_tokens=new_tokens_asked(doc),
    )
    cp = config_policy(Policy(spec.thresholds, spec.gates, spec.validators), facts)
    if cp.out_of_scope:
        return cp.thresholds, f"out of the calibration's scope: {cp.out_of_scope}", cp.out_of_scope
    return cp.thresholds, margin_source(cp), None


def run(args: argparse.Namespace) -> int:
    from harness.compare.replay_job import validate_elsewhere
    from harness.execution.executors import make_executor
    from harness.execution.replay import Candidate
    from harness.spec.tasks import load_task_file, task_kind, task_to_doc
    from harness.store.candidate import read_candidate

    task = load_task_file(args.task)
    kind = task_kind(task)
    thr, margin_from, out_of_scope = _thresholds(args, task, kind)
    files = read_candidate(args.candidate, args.stem)
    if out_of_scope:  # a calibration that does not cover the task decides nothing: never an acceptance
        from harness.compare.replay import ReplayDecision

        refused = ReplayDecision(accepted=None, reason=f"{args.matrix}: {out_of_scope}", margin_from=margin_from)
        if args.json:
            sys.stdout.write(json.dumps(refused.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
        else:
            print(f"NOT REPLAYABLE: {refused.reason}")
        return EXIT_FAIL
    starts = ("warm", "cold") if args.start == "either" else (args.start,)
    executor = make_executor(args.executor, address=args.address)
    try:  # the replay is a job of the executor: a fresh worker (its determinism set before torch starts)
        decision = validate_elsewhere(
            kind,
            task_to_doc(task),
            Candidate(arrays=files.arrays, response=files.response),
            thr,
            ran_on=files.device,
            batch_size=files.batch_size,
            starts=starts,
            path=args.path,
            executor=executor,
        ).model_copy(update={"margin_from": margin_from})
    finally:
        executor.shutdown()
    if args.json:
        sys.stdout.write(json.dumps(decision.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    else:
        word = {True: "ACCEPTED", False: "REJECTED", None: "NOT REPLAYABLE"}[decision.accepted]
        print(f"{word}: {decision.reason}")
        if decision.replayable:
            facts = [
                f"start {decision.start}",
                f"path {', '.join(decision.paths)}",
                f"{decision.seconds:.2f} s",
                f"margin {decision.margin:.3g} ({margin_from})",
            ]
            if decision.closest is not None:
                facts.append(f"closest call {decision.closest:.3g}")
            if decision.waveform:
                w = decision.waveform
                facts.append(f"waveform vs decoded codes: max abs {w.get('max_abs')}, rel-L2 {w.get('rel_l2')}")
            print("  " + "; ".join(facts))
    return EXIT_OK if decision.accepted else EXIT_FAIL
