"""``harness bundle | certify | validators | compare | bench``: hardware certification commands.

``register(subparsers)`` adds the five subcommands to the main parser (harness.cli.main); each
sets ``func``. Expected failures raise StoreError subclasses (BundleError, CertifyError,
CrossRunError), which the CLI prints as one ``error: ...`` line with exit code 2.
Exit codes: ``certify`` 0 only when every configuration is bitwise identical to the
reference, 1 otherwise; ``compare`` and ``bench`` 1 when a ``--check`` on costs fails; else 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.store.run import StoreError
from harness.isa import ISA_NAMES

EXIT_OK, EXIT_FAIL = 0, 1


def _match_mode(text: str) -> str:
    from harness.analysis.crossrun import CrossRunError, parse_match

    try:
        parse_match(text)
    except CrossRunError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# --- bundle --------------------------------------------------------------------------------------

def cmd_bundle(args) -> int:
    from harness.cli.trust import signing_key
    from harness.store.bundle import sha256_file, verify_bundle, write_bundle

    key = signing_key(args.sign)
    _refuse_broken_evidence(Path(args.run))
    path = write_bundle(Path(args.run), Path(args.out) if args.out else None, sign_key=key)
    doc = verify_bundle(path)  # read back what was written: a bundle is only as good as its check
    files = doc["files"]
    artifacts = sum(1 for name in files if name.startswith("artifacts/"))
    print(f"bundle {path}")
    print(f"sha256 {sha256_file(path)}")
    print(f"{len(files)} files ({artifacts} artifacts), manifest sha256 {doc['manifest_sha256']}")
    print(doc["signed_by"])
    return EXIT_OK


def _refuse_broken_evidence(run_dir: Path) -> None:
    """A bundle is a reference: incomplete or broken evidence must not travel as one."""
    from harness.analysis.evidence import gather
    from harness.store.run import RunStore

    store = RunStore(run_dir)
    loaded = store.load_records()
    evidence = gather(store, store.manifest(), loaded.records, loaded.problems)
    if not evidence.ok:
        raise StoreError(f"{run_dir}: cannot bundle this run: {len(evidence.problems)} evidence problem(s); "
                         f"first: {evidence.problems[0]}")


# --- certify ------------------------------------------------------------------------------------

def emulation_text(emulation: dict) -> str:
    """``threads=2, isa=avx2``: the emulation settings a certificate was made with."""
    return ", ".join(f"{k}={emulation[k]}" for k in ("threads", "isa") if emulation.get(k) is not None)


def cmd_certify(args) -> int:
    from harness.workflows.certify import certify

    from harness.cli.trust import sign_json_file, signing_key, trusted_from

    key = signing_key(args.sign)  # a bad key is refused before anything runs
    if args.junit:  # a target that cannot be written is refused before any cell runs
        from harness.store.safe_output import check_output_target

        check_output_target(Path(args.junit))
    if args.whitelist_entry and not args.node_version:
        raise StoreError("--whitelist-entry needs --node-version MAJOR.MINOR.PATCH: the version the node reports to "
                         "the relay (its worker's), which the harness cannot know")
    if (args.node_version or args.node_platform) and not args.whitelist_entry:
        raise StoreError(f"--{'node-version' if args.node_version else 'node-platform'} is for --whitelist-entry FILE")
    cert, run_dir = certify(Path(args.reference), matrix=Path(args.matrix) if args.matrix else None,
                            out=Path(args.out) if args.out else None, threads=args.threads,
                            progress=not args.no_progress, trusted_keys=trusted_from(args), isa=args.isa,
                            device=args.device)
    if cert.emulation:
        print(f"note: {cert.emulation['note']} ({emulation_text(cert.emulation)})")
    if cert.device:
        print(f"note: the reference's cells ({', '.join(cert.reference_devices) or 'none'}) ran here on {cert.device}; "
              f"matched ignoring the device")
    for c in cert.configs:
        print(f"{c.verdict:>19}  {c.config_id}: {c.reason}")
    for line in cert.not_certified:
        print(f"{'not certified':>19}  {line}")
    print(f"certificate {run_dir / 'certificate.md'}")
    print(f"certificate {run_dir / 'certificate.json'}")
    signed_by = "unsigned"
    if key is not None:
        signed_by = f"ed25519:{sign_json_file(run_dir / 'certificate.json', key)}"
        print(f"signed certificate.json with {signed_by}")
    else:
        print("certificate is unsigned (sign it with --sign KEY)")
    print(cert.summary)
    if args.junit:
        from harness.report.junit import render_certificate, write_junit

        print(f"junit {write_junit(Path(args.junit), render_certificate(cert))}")
    if args.whitelist_entry:
        _whitelist_entry(args, cert, run_dir, key, signed_by)
    return EXIT_OK if cert.passed else EXIT_FAIL  # the entry never changes the verdict's exit code


def _whitelist_entry(args, cert, run_dir: Path, key, signed_by: str) -> None:
    """Write the relay's whitelist entry for what passed, or say in one line why not."""
    from harness.store.bundle import sha256_file
    from harness.workflows.whitelist import WhitelistError, build_entry, nvidia_smi_cards, write_entry

    try:
        doc = build_entry(cert, sha256_file(run_dir / "certificate.json"), args.node_version,
                          platform=args.node_platform, cards=nvidia_smi_cards(), signed_by=signed_by)
    except WhitelistError as err:
        print(f"whitelist entry not written: {err}", file=sys.stderr)
        return
    who = write_entry(Path(args.whitelist_entry), doc, key)
    print(f"whitelist entry {args.whitelist_entry} ({'signed with ed25519:' + who if key is not None else 'unsigned'}): "
          f"{doc['key']} for {len(doc['covers'])} passed configuration(s)")
    for line in doc["curl"]:
        print(line)


# --- validators ---------------------------------------------------------------------------------

def study_settings(settings, **given):
    """A study's settings with the options the user gave (``--seeds``, ``--tokens``) applied."""
    from dataclasses import replace

    updates = {k: v for k, v in given.items() if v}
    return replace(settings, **updates) if updates else settings


def run_study_or_refuse(run, settings, what: str):
    """Run a study; a setting it refuses (ValueError) is one line naming the study."""
    try:
        return run(settings)
    except ValueError as err:
        raise StoreError(f"{what}: {err}") from None


def cmd_validators(args) -> int:
    from harness.store.run import atomic_write_bytes
    from harness.report.validators import render_markdown
    from harness.workflows.validator_study import FULL, QUICK, plot_det, run_study

    if args.calibration:
        return write_calibration(args)
    result = run_study_or_refuse(run_study, study_settings(QUICK if args.quick else FULL, seeds=args.seeds),
                                 "validator study")
    plot = Path(args.plot) if args.plot else (Path(args.out).with_suffix(".det.png") if args.out
                                                else Path("reports") / "validators" / "det.png")
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
    from harness.store.run import atomic_write_json
    from harness.workflows.calibration_study import CalibrationSettings, run_calibration

    settings = study_settings(CalibrationSettings(), seeds=args.seeds, max_new_tokens=args.tokens)
    cal = run_study_or_refuse(run_calibration, settings, "calibration")
    atomic_write_json(Path(args.calibration), cal.model_dump(mode="json"))
    for e in cal.entries:
        sc = e.scope
        print(f"{sc.dtype}{f' {sc.quantize_bits}-bit' if sc.quantize_bits else ''}: sources {', '.join(sc.sources)}; "
              f"max abs {e.waveform_max_abs:.3g}, rel-L2 {e.waveform_rel_l2:.3g}; held-out FRR {e.false_reject.rate:.3f} "
              f"({e.false_reject.errors}/{e.false_reject.pairs}), FAR {e.false_accept.rate:.3f} "
              f"({e.false_accept.errors}/{e.false_accept.pairs})")
        for note in e.notes:
            print(f"  note: {note}")
    print(cal.made_by)
    print(f"wrote {args.calibration}")
    return EXIT_OK


# --- compare -------------------------------------------------------------------------------------

def cmd_compare(args) -> int:
    from harness.store.bundle import open_run_or_bundle
    from harness.analysis.crossrun import compare_runs
    from harness.report.crossrun import render_crossrun
    from harness.store.run import atomic_write_json

    from harness.cli.trust import trusted_from

    trusted = trusted_from(args)
    with open_run_or_bundle(args.a, trusted) as run_a, open_run_or_bundle(args.b, trusted) as run_b:
        for run in (run_a, run_b):
            if run.is_bundle:
                print(f"{run.source}: {run.signed_by}")
        result = compare_runs(run_a, run_b, match=args.match)
        sys.stdout.write(render_crossrun(result))
        if args.json:
            atomic_write_json(Path(args.json), result.model_dump(mode="json"))
            print(f"wrote {args.json}")
        rows: list = []
        code = _compare_costs(run_a.store, run_b.store, args.check or [], args.min_effect, rows)
        if args.junit:
            _compare_junit(args, run_a, result, rows)
        return code


def _compare_junit(args, run_a, result, rows: list) -> None:
    """Each configuration of A judged as certification judges B against it, then the costs."""
    from harness.report.junit import render_compare, write_junit
    from harness.workflows.certify import judge

    verdicts = {}
    for out in result.configs:
        verdict, reason, _ = judge(out, result)  # the validator each configuration resolved
        verdicts[out.config_id] = (verdict, reason)
    print(f"junit {write_junit(Path(args.junit), render_compare(result, verdicts, rows, args.check or []))}")


def _compare_costs(store_a, store_b, checks: list[str], min_effect: float = 0.0, rows_out: list | None = None) -> int:
    from harness.analysis.costs import compare_run_costs, has_regressions
    from harness.report.costs import render_cost_table

    try:
        rows = compare_run_costs(store_a, store_b, checks, min_effect=min_effect)
    except ValueError as err:
        raise StoreError(f"--check: {str(err).splitlines()[0]}") from None
    if rows_out is not None:
        rows_out.extend(rows)
    print("\n# Costs\n")
    sys.stdout.write(render_cost_table(rows))
    return EXIT_FAIL if has_regressions(rows) and checks else EXIT_OK


def _node_version(text: str) -> str:
    from harness.workflows.whitelist import normalize_node_version

    try:
        return normalize_node_version(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _check(text: str) -> str:
    """An argparse type: a cost check (``significant``, ``median:10%``), refused before anything runs."""
    from harness.analysis.bench import parse_check

    try:
        parse_check(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _min_effect(text: str) -> float:
    from harness.analysis.significance import parse_min_effect

    try:
        return parse_min_effect(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# --- bench ---------------------------------------------------------------------------------------

def cmd_bench(args) -> int:
    from harness.analysis.costs import compare_benchmark_files, has_regressions
    from harness.report.costs import render_cost_table

    checks = args.check or []
    rows = compare_benchmark_files(args.baseline, args.current, checks, min_effect=args.min_effect)
    print(f"# Benchmarks: {args.current} against {args.baseline}\n")
    sys.stdout.write(render_cost_table(rows))
    untested = [r.key for r in rows if r.change is not None and r.change.verdict == "no samples"]
    if untested:
        print(f"note: {len(untested)} benchmark(s) without per-round samples on one side (saved without "
              f"--benchmark-save-data): judged by their summary numbers only", file=sys.stderr)
    return EXIT_FAIL if checks and has_regressions(rows) else EXIT_OK


# --- registration -------------------------------------------------------------------------------

def register(sub) -> None:
    s = sub.add_parser("bundle", help="pack a run into one verifiable file (manifest, results, artifacts)")
    s.add_argument("run", help="run directory")
    s.add_argument("--out", metavar="FILE", help="bundle file (default <run>.bundle.zip next to the run)")
    s.add_argument("--sign", metavar="KEY", help="sign bundle.json with this Ed25519 private key (harness keygen)")
    s.set_defaults(func=cmd_bundle)

    s = sub.add_parser("certify", help="re-run a reference bundle's cells here and certify this machine")
    s.add_argument("--reference", required=True, metavar="BUNDLE", help="the reference run's bundle")
    s.add_argument("--matrix", metavar="M", help="run this matrix instead (its cells must be in the reference)")
    s.add_argument("--out", metavar="DIR", help="run directory (default reports/runs/<time>-certify)")
    s.add_argument("--threads", type=_positive_int, metavar="N",
                   help="EMULATION: override the threads axis to stand in for other hardware on this machine "
                        "(cells are then matched ignoring threads)")
    s.add_argument("--isa", choices=ISA_NAMES, metavar="LEVEL",
                   help=f"EMULATION: run every cell at this CPU kernel level ({', '.join(ISA_NAMES)}) to stand in "
                        f"for another CPU kind on this machine (cells are then matched ignoring isa)")
    s.add_argument("--device", metavar="DEV",
                   help="re-run the reference's cells on this device (cpu, cuda, cuda:N), matched ignoring the device: "
                        "a CPU reference certified on a GPU, or a GPU run back on a CPU")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--sign", metavar="KEY", help="sign certificate.json with this Ed25519 private key")
    s.add_argument("--trusted-keys", metavar="FILE", help="the reference bundle must be signed by one of these keys")
    s.add_argument("--junit", metavar="FILE", help="also write the certificate as JUnit XML (one testcase per configuration)")
    s.add_argument("--whitelist-entry", metavar="FILE",
                   help="also write the Crynux relay's node-name whitelist entry (the admin API's JSON body and the "
                        "curl line) for this machine's GPU when configurations passed on it; signed with --sign")
    s.add_argument("--node-version", type=_node_version, metavar="X.Y.Z",
                   help="with --whitelist-entry: the node version the relay will see (the node's, not the harness's)")
    s.add_argument("--node-platform", choices=("docker", "Linux", "Windows", "Darwin"),
                   help="with --whitelist-entry: the platform the node appends to its GPU name (default: detected "
                        "here as the node detects it)")
    s.set_defaults(func=cmd_certify)

    s = sub.add_parser("validators", help="measure audio validators' false reject/accept rates on tiny MusicGen")
    s.add_argument("--quick", action="store_true", help="few pairs (a smoke test), no second worker process")
    s.add_argument("--seeds", type=_positive_int, help="seeds per prompt (default 20, quick 2)")
    s.add_argument("--out", metavar="FILE", help="also write the Markdown table here")
    s.add_argument("--plot", metavar="FILE", help="the DET plot (PNG; default next to --out, else "
                                                  "reports/validators/det.png)")
    s.add_argument("--calibration", metavar="FILE",
                   help="instead: calibrate the composite rule per configuration (float32, bfloat16, 8-bit) across "
                        "every CPU kernel level this machine gives and write the scoped calibration file a matrix "
                        "names (default 6 seeds x 2 prompts, 64 tokens)")
    s.add_argument("--tokens", type=_positive_int, help="with --calibration: new tokens per generation (default 64)")
    s.set_defaults(func=cmd_validators)

    s = sub.add_parser("compare", help="compare two runs or bundles cell by cell (outputs, then costs)")
    s.add_argument("a", help="reference run directory or bundle")
    s.add_argument("b", help="run directory or bundle to compare with it")
    s.add_argument("--match", type=_match_mode, default="spec",
                   help="spec (equal spec hashes, default) or ignore:AXIS (threads, batch_size, dtype, load, isa; several: ignore:threads,isa)")
    _cost_options(s)
    s.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    s.add_argument("--trusted-keys", metavar="FILE", help="bundles must be signed by one of these keys")
    s.add_argument("--junit", metavar="FILE", help="also write JUnit XML: one testcase per configuration of A (fails "
                                                   "when B does not reproduce it), and per --check on its costs")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("bench", help="compare two pytest-benchmark files (nox -s bench), significant changes only")
    s.add_argument("baseline", help="pytest-benchmark JSON (saved with --benchmark-save-data for per-round samples)")
    s.add_argument("current", help="pytest-benchmark JSON to compare with it")
    _cost_options(s)
    s.set_defaults(func=cmd_bench)


def _cost_options(s) -> None:
    s.add_argument("--check", action="append", nargs="?", const="significant", type=_check, metavar="EXPR",
                   help="cost regression check (repeatable; exit 1 when one fails): significant (the default of a "
                        "bare --check: a slowdown a Mann-Whitney U test over the per-execution latencies calls "
                        "significant at 95%%), or a threshold on the summary numbers alone, e.g. median:10%%")
    s.add_argument("--min-effect", type=_min_effect, default=0.0, metavar="PCT",
                   help="a significant change smaller than this (e.g. 5%%) is reported as not significant")


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m harness.cli.cert``) until harness.cli.main registers these."""
    p = argparse.ArgumentParser(prog="harness")
    sub = p.add_subparsers(dest="command", required=True)
    register(sub)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except StoreError as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
