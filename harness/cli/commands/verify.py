"""``harness verify RUN|BUNDLE|CERT.json``: check what a run, bundle, certificate or whitelist entry claims.

For a run or bundle it recomputes every record's receipt chain from what is stored (the task
from the manifest's matrix, the outputs from the artifacts, the rest from the record and the
manifest), checks completeness, duplicates and foreign records (harness.analysis.evidence) and,
for a bundle, its member digests and signature; it prints one line per problem, naming the
first receipt link that does not hold. For a JSON document it checks the signature. Exit
codes: 0 verified, 1 not verified, 2 bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.arguments import add_trusted_keys
from harness.cli.common import EXIT_FAIL, EXIT_OK
from harness.store.files import read_json_file

NAME = "verify"


def setup_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    s = sub.add_parser(
        NAME, help="recompute receipts and check the evidence of a run, bundle, certificate or calibration"
    )
    s.add_argument("path", help="run directory, bundle file, certificate.json, a whitelist entry or a calibration")
    add_trusted_keys(s, "public keys to accept (default $HARNESS_TRUSTED_KEYS); then a signature is required")
    return s


def run(args: argparse.Namespace) -> int:
    from harness.analysis.evidence import gather as check_evidence
    from harness.cli.trust import trusted_from
    from harness.store.bundle import TrustError, open_run_or_bundle
    from harness.store.signing import SignatureError, check_document

    path = Path(args.path)
    trusted = trusted_from(args)
    if path.is_file() and path.suffix == ".json":
        from harness.spec.calibration import CalibrationTrustError, parse_calibration
        from harness.workflows.certify import parse_certificate
        from harness.workflows.whitelist import DOCUMENT, WhitelistMismatch, parse_entry

        doc = read_json_file(path, "certificate")
        try:
            if isinstance(doc, dict) and doc.get("document") == DOCUMENT:
                parse_entry(doc, str(path))  # a relay whitelist entry (harness certify --whitelist-entry)
            elif isinstance(doc, dict) and "entries" in doc and "made_by" in doc:  # a calibration
                check = parse_calibration(doc, str(path)).signer(trusted, str(path))
                print(f"VERIFIED {path}: calibration, {check.label}")
                return EXIT_OK
            else:
                parse_certificate(doc, str(path))
            check = check_document(doc, trusted, str(path))
        except (SignatureError, CalibrationTrustError, WhitelistMismatch) as err:
            print(f"NOT VERIFIED {err}")
            return EXIT_FAIL
        print(f"VERIFIED {path}: {check.label}")
        return EXIT_OK
    try:
        opened = open_run_or_bundle(path, trusted)
    except TrustError as err:  # every signature or trusted-key failure of a run or bundle
        print(f"NOT VERIFIED {err}")
        return EXIT_FAIL
    with opened as stored:
        manifest = stored.store.manifest()
        loaded = stored.store.load_records()
        ev = check_evidence(stored.store, manifest, loaded.records, loaded.problems, verify=True)
        label = stored.signed_by if stored.is_bundle else "run directory (unsigned)"
        for problem in ev.problems:
            print(f"problem: {problem}")
        counts = (
            f"{ev.receipts_checked} receipt(s) and {ev.artifacts_checked} artifact(s) checked, "
            f"{ev.final_cells}/{ev.expected_cells if ev.expected_cells is not None else '?'} cells recorded"
        )
        if ev.problems:
            print(f"NOT VERIFIED {path} ({label}): {len(ev.problems)} problem(s); {counts}")
            return EXIT_FAIL
        print(f"VERIFIED {path} ({label}): {counts}")
        return EXIT_OK
