"""``harness keygen | verify``: keys for signing, and checking what a run, bundle or certificate claims.

``verify RUN|BUNDLE`` recomputes every record's receipt chain from what is stored (the task
from the manifest's matrix, the outputs from the artifacts, the rest from the record and the
manifest), checks completeness, duplicates and foreign records (harness.store.evidence) and,
for a bundle, its member digests and signature; it prints one line per problem, naming the
first receipt link that does not hold, and exits 1 when anything fails. ``verify CERT.json``
checks a certificate's signature (and ``verify ENTRY.json`` a relay whitelist entry's). Exit codes: 0 verified, 1 not verified, 2 bad input.
"""

from __future__ import annotations

from pathlib import Path

from harness.store.run import StoreError, read_json_file

EXIT_OK, EXIT_FAIL = 0, 1


def trusted_from(args) -> set[str] | None:
    from harness.store.signing import SignatureError, load_trusted_keys

    try:
        return load_trusted_keys(getattr(args, "trusted_keys", None))
    except SignatureError as err:
        raise StoreError(str(err)) from None


def signing_key(path: str | None):
    if not path:
        return None
    from harness.store.signing import SignatureError, load_private_key

    try:
        return load_private_key(path)
    except SignatureError as err:
        raise StoreError(str(err)) from None


def cmd_keygen(args) -> int:
    from harness.store.signing import SignatureError, generate_keypair

    try:
        key, pub = generate_keypair(args.name, args.comment or "")
    except SignatureError as err:
        raise StoreError(str(err)) from None
    print(f"private key {key} (mode 0600: keep it secret)")
    print(f"public key  {pub} (add its line to the verifiers' trusted-keys file)")
    return EXIT_OK


def sign_json_file(path: Path, key) -> str:
    """Embed a signature into a JSON document file (a certificate); returns the key id."""
    from harness.store.run import atomic_write_json
    from harness.store.signing import sign_document

    doc = read_json_file(path, "certificate")
    signed = sign_document(doc, key)
    atomic_write_json(path, signed)
    return signed["signature"]["key_id"]


def cmd_verify(args) -> int:
    from harness.store.bundle import open_run_or_bundle
    from harness.analysis.evidence import gather as check_evidence
    from harness.store.signing import SignatureError, check_document

    path = Path(args.path)
    trusted = trusted_from(args)
    if path.is_file() and path.suffix == ".json":
        from harness.workflows.certify import parse_certificate
        from harness.workflows.whitelist import DOCUMENT, parse_entry

        doc = read_json_file(path, "certificate")
        if isinstance(doc, dict) and doc.get("document") == DOCUMENT:
            parse_entry(doc, str(path))  # a relay whitelist entry (harness certify --whitelist-entry)
        else:
            parse_certificate(doc, str(path))
        try:
            check = check_document(doc, trusted, str(path))
        except SignatureError as err:
            print(f"NOT VERIFIED {err}")
            return EXIT_FAIL
        print(f"VERIFIED {path}: {check.label}")
        return EXIT_OK
    try:
        opened = open_run_or_bundle(path, trusted)
    except StoreError as err:
        if "signature" in str(err) or "trusted keys" in str(err):
            print(f"NOT VERIFIED {err}")
            return EXIT_FAIL
        raise
    with opened as run:
        manifest = run.store.manifest()
        loaded = run.store.load_records()
        ev = check_evidence(run.store, manifest, loaded.records, loaded.problems, verify=True)
        label = run.signed_by if run.is_bundle else "run directory (unsigned)"
        for problem in ev.problems:
            print(f"problem: {problem}")
        counts = (f"{ev.receipts_checked} receipt(s) and {ev.artifacts_checked} artifact(s) checked, "
                  f"{ev.final_cells}/{ev.expected_cells if ev.expected_cells is not None else '?'} cells recorded")
        if ev.problems:
            print(f"NOT VERIFIED {path} ({label}): {len(ev.problems)} problem(s); {counts}")
            return EXIT_FAIL
        print(f"VERIFIED {path} ({label}): {counts}")
        return EXIT_OK


def register(sub) -> None:
    s = sub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles and certificates")
    s.add_argument("name", help="writes NAME.key (private, 0600) and NAME.pub")
    s.add_argument("--comment", help="text after the public key (default: the name)")
    s.set_defaults(func=cmd_keygen)

    s = sub.add_parser("verify", help="recompute receipts and check the evidence of a run, bundle or certificate")
    s.add_argument("path", help="run directory, bundle file, certificate.json or a whitelist entry")
    s.add_argument("--trusted-keys", metavar="FILE",
                   help="public keys to accept (default $HARNESS_TRUSTED_KEYS); then a signature is required")
    s.set_defaults(func=cmd_verify)
