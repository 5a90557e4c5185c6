"""``harness calibrate RUN_OR_BUNDLE... --rule composite|replay --out FILE``: a rule's calibration
file from study runs and bundles (harness.workflows.calibrate), with an optional study report."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.arguments import add_sign
from harness.cli.common import EXIT_OK

NAME = "calibrate"


def setup_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    s = sub.add_parser(
        NAME,
        help="derive a rule's calibration file (bounds, held-out false reject / accept, scope) "
        "from study runs and bundles",
    )
    s.add_argument(
        "runs", nargs="+", metavar="RUN_OR_BUNDLE", help="study run directories and bundles (other machines)"
    )
    s.add_argument("--rule", choices=("composite", "replay"), default="composite", help="the rule to calibrate")
    s.add_argument("--out", required=True, metavar="FILE", help="the calibration file a matrix names")
    s.add_argument("--report", metavar="DIR", help="also write the study report: calibration.md, .json and det.png")
    add_sign(s, "sign the calibration with this Ed25519 private key (harness keygen): a calibration is policy")
    return s


def run(args: argparse.Namespace) -> int:
    from harness.cli.trust import sign_calibration, signing_key
    from harness.report.calibration import write_report
    from harness.store.run import atomic_write_json
    from harness.workflows.calibrate import run_calibration

    key = signing_key(args.sign)  # before the study: a bad key costs nothing
    study = run_calibration(args.runs, args.rule)
    cal = sign_calibration(study.calibration, key) if key is not None else study.calibration
    atomic_write_json(Path(args.out), cal.model_dump(mode="json", exclude_none=False))
    for c in study.configs:
        e = c.entry
        print(
            f"{c.config.name}: sources {', '.join(e.scope.sources) or 'none'}; bounds {e.waveform_max_abs:.3g} / "
            f"{e.waveform_rel_l2:.3g}; held-out FRR {e.false_reject.errors}/{e.false_reject.pairs} "
            f"(95% CI {e.false_reject.low:.3f}-{e.false_reject.high:.3f}), FAR {e.false_accept.errors}/"
            f"{e.false_accept.pairs} (95% CI {e.false_accept.low:.3f}-{e.false_accept.high:.3f})"
        )
        for note in e.notes:
            print(f"  note: {note}")
    for note in study.notes:
        print(f"note: {note}")
    print(study.calibration.made_by)
    print(f"wrote {args.out} ({cal.signer(None, args.out).label})")
    if args.report:
        for path in write_report(study, Path(args.report)):
            print(f"wrote {path}")
    return EXIT_OK
