"""``harness validators``: the audio validators' false reject/accept rates on tiny MusicGen (a DET
plot and a Markdown table), or with ``--calibration FILE`` the scoped calibration a matrix names."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.cli.arguments import add_sign, positive_int
from harness.cli.common import EXIT_OK, run_study_or_refuse, study_settings

NAME = "validators"


def setup_arguments(sub):
    s = sub.add_parser(NAME, help="measure audio validators' false reject/accept rates on tiny MusicGen")
    s.add_argument("--quick", action="store_true", help="few pairs (a smoke test), no second worker process")
    s.add_argument("--seeds", type=positive_int, help="seeds per prompt (default 20, quick 2)")
    s.add_argument("--out", metavar="FILE", help="also write the Markdown table here")
    s.add_argument(
        "--plot", metavar="FILE", help="the DET plot (PNG; default next to --out, else reports/validators/det.png)"
    )
    s.add_argument(
        "--calibration",
        metavar="FILE",
        help="instead: calibrate the composite rule per configuration (float32, bfloat16, 8-bit) across "
        "every CPU kernel level this machine gives and write the scoped calibration file a matrix "
        "names (default 6 seeds x 2 prompts, 64 tokens)",
    )
    s.add_argument("--tokens", type=positive_int, help="with --calibration: new tokens per generation (default 64)")
    add_sign(s, "with --calibration: sign the calibration with this Ed25519 private key (harness keygen)")
    return s


def run(args) -> int:
    from harness.report.validators import render_markdown
    from harness.store.run import atomic_write_bytes
    from harness.workflows.validator_study import FULL, QUICK, plot_det, run_study

    if args.calibration:
        return write_calibration(args)
    result = run_study_or_refuse(
        run_study, study_settings(QUICK if args.quick else FULL, seeds=args.seeds), "validator study"
    )
    plot = (
        Path(args.plot)
        if args.plot
        else (Path(args.out).with_suffix(".det.png") if args.out else Path("reports") / "validators" / "det.png")
    )
    plot_det(result, plot)
    text = render_markdown(result) + f"\nDET plot: `{plot}`\n"
    if args.out:
        atomic_write_bytes(Path(args.out), text.encode())
    sys.stdout.write(text)
    if args.out:
        print(f"wrote {args.out}")
    print(f"wrote {plot}")
    return EXIT_OK


def write_calibration(args) -> int:
    from harness.cli.trust import sign_calibration, signing_key
    from harness.store.run import atomic_write_json
    from harness.workflows.calibration_study import CalibrationSettings, run_calibration

    key = signing_key(args.sign)  # before the study: a bad key costs nothing
    settings = study_settings(CalibrationSettings(), seeds=args.seeds, max_new_tokens=args.tokens)
    cal = run_study_or_refuse(run_calibration, settings, "calibration")
    if key is not None:
        cal = sign_calibration(cal, key)
    atomic_write_json(Path(args.calibration), cal.model_dump(mode="json"))
    for e in cal.entries:
        sc = e.scope
        print(
            f"{sc.dtype}{f' {sc.quantize_bits}-bit' if sc.quantize_bits else ''}: sources {', '.join(sc.sources)}; "
            f"max abs {e.waveform_max_abs:.3g}, rel-L2 {e.waveform_rel_l2:.3g}; held-out FRR {e.false_reject.rate:.3f} "
            f"({e.false_reject.errors}/{e.false_reject.pairs}), FAR {e.false_accept.rate:.3f} "
            f"({e.false_accept.errors}/{e.false_accept.pairs})"
        )
        for note in e.notes:
            print(f"  note: {note}")
    print(cal.made_by)
    print(f"wrote {args.calibration} ({cal.signer(None, args.calibration).label})")
    return EXIT_OK
