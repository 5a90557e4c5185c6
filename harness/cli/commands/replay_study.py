"""``harness replay-study``: the replay rule's held-out error rates where honest codes differ
(CPU kernel sets, threads, processes), its calibration and DET curve, written under ``--out``."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.cli.arguments import add_sign
from harness.cli.common import EXIT_OK, run_study_or_refuse, study_settings

NAME = "replay-study"


def setup_arguments(sub):
    s = sub.add_parser(
        NAME,
        help="the replay rule's held-out false reject / accept where honest codes "
        "differ (CPU kernel sets, threads, processes), calibration and DET curve",
    )
    s.add_argument("--quick", action="store_true", help="a few tasks (a smoke test)")
    s.add_argument("--seeds", type=int, help="seeds per prompt")
    s.add_argument("--out", default="docs", help="folder for replay-study.md/.json, the calibration and the DET plot")
    add_sign(s, "sign the calibration with this Ed25519 private key (harness keygen)")
    return s


def run(args) -> int:
    from harness.cli.trust import sign_calibration, signing_key
    from harness.report.replay_study import render_markdown
    from harness.store.run import atomic_write_bytes, atomic_write_json
    from harness.workflows.replay_study import FULL, QUICK, plot_det, run_study

    key = signing_key(args.sign)  # before the study: a bad key costs nothing
    result = run_study_or_refuse(
        run_study, study_settings(QUICK if args.quick else FULL, seeds=args.seeds), "replay study"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot = plot_det(result, out / "replay-det.png")
    atomic_write_json(out / "replay-study.json", result.to_json())
    cal = result.calibration if key is None else sign_calibration(result.calibration, key)
    atomic_write_json(out / "replay-calibration.json", cal.model_dump(mode="json"))
    text = render_markdown(result, plot.name)
    atomic_write_bytes(out / "replay-study.md", text.encode())
    sys.stdout.write(text)
    for name in ("replay-study.md", "replay-study.json", "replay-calibration.json", "replay-det.png"):
        print(f"wrote {out / name}")
    return EXIT_OK
