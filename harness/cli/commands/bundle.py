"""``harness bundle RUN``: pack a run into one verifiable file, refused when its evidence is broken."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.arguments import add_sign
from harness.cli.common import EXIT_OK
from harness.errors import StoreError

NAME = "bundle"


def setup_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    s = sub.add_parser(NAME, help="pack a run into one verifiable file (manifest, results, artifacts)")
    s.add_argument("run", help="run directory")
    s.add_argument("--out", metavar="FILE", help="bundle file (default <run>.bundle.zip next to the run)")
    add_sign(s, "sign bundle.json with this Ed25519 private key (harness keygen)")
    return s


def run(args: argparse.Namespace) -> int:
    from harness.cli.trust import signing_key
    from harness.digests import sha256_file
    from harness.store.bundle import verify_bundle, write_bundle

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
        raise StoreError(
            f"{run_dir}: cannot bundle this run: {len(evidence.problems)} evidence problem(s); "
            f"first: {evidence.problems[0]}"
        )
