"""``harness replay TASK CANDIDATE_DIR``: check a candidate's output against the task.

Anyone can re-run a replay from three things: the task document, the candidate's result folder
(``harness exec --out DIR`` writes the WAV or response and ``STEM.tokens.json``) and the model.
The candidate sends no logits and no margins. The replay is a job of the executor (a local
worker process, or Ray with ``--executor ray``), as every model execution of the harness is.
Exit 0: accepted; 1: rejected or not replayable (never accepted by default); 2: bad input
(one line).
"""

from __future__ import annotations

import json
import sys

from harness.cli.common import EXIT_FAIL, EXIT_OK
from harness.execution.executors import names as executor_names

NAME = "replay"


def setup_arguments(sub):
    s = sub.add_parser(
        NAME,
        help="check a candidate's output against the task: every token the seed's, "
        "near-ties within the calibrated margin, the result built from them",
    )
    s.add_argument("task", help="the task document (JSON)")
    s.add_argument("candidate", help="the candidate's result folder (harness exec --out DIR writes it)")
    s.add_argument("--stem", help="which result in the folder (STEM.tokens.json; default: the only one)")
    s.add_argument(
        "--matrix", metavar="M", help="take the thresholds (replay margins, decoder bounds) from this matrix"
    )
    s.add_argument("--margin", type=float, help="the largest gap a flipped near-tie may have (logit units)")
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
    s.add_argument(
        "--executor",
        choices=executor_names(),
        default="local",
        help="where the replay runs: a local worker process (default) or a Ray cluster",
    )
    s.add_argument("--address", help="Ray cluster to use: auto or HOST:PORT (default: start a local Ray instance)")
    s.add_argument("--json", action="store_true", help="print the decision as JSON")
    return s


def _thresholds(args):
    from harness.errors import HarnessError
    from harness.spec.policy import Thresholds

    thr = Thresholds()
    if args.matrix:
        from harness.spec.matrix import load_matrix

        thr = load_matrix(args.matrix).spec.thresholds
    if args.margin is not None:
        if not args.margin >= 0:
            raise HarnessError(f"argument --margin: must be >= 0, got {args.margin}")
        thr = thr.model_copy(update={"replay_margin": args.margin, "replay_dtypes": {}})
    return thr


def run(args) -> int:
    from harness.compare.replay_job import validate_elsewhere
    from harness.execution.executors import make_executor
    from harness.execution.replay import Candidate
    from harness.spec.tasks import load_task_file, task_kind, task_to_doc
    from harness.store.candidate import read_candidate

    thr = _thresholds(args)
    task = load_task_file(args.task)
    kind = task_kind(task)
    files = read_candidate(args.candidate, args.stem)
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
        )
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
                f"margin {decision.margin:.3g}",
            ]
            if decision.closest is not None:
                facts.append(f"closest call {decision.closest:.3g}")
            if decision.waveform:
                w = decision.waveform
                facts.append(f"waveform vs decoded codes: max abs {w.get('max_abs')}, rel-L2 {w.get('rel_l2')}")
            print("  " + "; ".join(facts))
    return EXIT_OK if decision.accepted else EXIT_FAIL
