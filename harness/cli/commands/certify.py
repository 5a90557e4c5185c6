"""``harness certify --reference BUNDLE``: re-run a reference's cells here and certify this machine.

Exit 0 only when every configuration is bitwise identical to the reference, 1 otherwise; the
relay whitelist entry (``--whitelist-entry``) never changes that. SIGTERM and SIGHUP end it
like Ctrl-C (``INTERRUPTIBLE``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.cli.arguments import add_junit, add_no_progress, add_sign, add_trusted_keys, node_version, positive_int
from harness.cli.common import EXIT_FAIL, EXIT_OK, check_junit_target
from harness.isa import ISA_CHOICES

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from harness.analysis.certificate import Certificate

NAME = "certify"
INTERRUPTIBLE = True


def setup_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    s = sub.add_parser(NAME, help="re-run a reference bundle's cells here and certify this machine")
    s.add_argument("--reference", required=True, metavar="BUNDLE", help="the reference run's bundle")
    s.add_argument("--matrix", metavar="M", help="run this matrix instead (its cells must be in the reference)")
    s.add_argument("--out", metavar="DIR", help="run directory (default reports/runs/<time>-certify)")
    s.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="EMULATION: override the threads axis to stand in for other hardware on this machine "
        "(cells are then matched ignoring threads)",
    )
    s.add_argument(
        "--isa",
        choices=ISA_CHOICES,
        metavar="LEVEL",
        help=f"EMULATION: run every cell at this CPU kernel level ({', '.join(ISA_CHOICES)}) to stand in "
        f"for another CPU kind on this machine (cells are then matched ignoring isa)",
    )
    s.add_argument(
        "--device",
        metavar="DEV",
        help="re-run the reference's cells on this device (cpu, cuda, cuda:N), matched ignoring the device: "
        "a CPU reference certified on a GPU, or a GPU run back on a CPU",
    )
    add_no_progress(s)
    add_sign(s, "sign certificate.json with this Ed25519 private key")
    add_trusted_keys(s, "the reference bundle must be signed by one of these keys")
    add_junit(s, "also write the certificate as JUnit XML (one testcase per configuration)")
    s.add_argument(
        "--whitelist-entry",
        metavar="FILE",
        help="also write the Crynux relay's node-name whitelist entry (the admin API's JSON body and the "
        "curl line) for this machine's GPU when configurations passed on it; signed with --sign",
    )
    s.add_argument(
        "--node-version",
        type=node_version,
        metavar="X.Y.Z",
        help="with --whitelist-entry: the node version the relay will see (the node's, not the harness's)",
    )
    s.add_argument(
        "--node-platform",
        choices=("docker", "Linux", "Windows", "Darwin"),
        help="with --whitelist-entry: the platform the node appends to its GPU name (default: detected "
        "here as the node detects it)",
    )
    return s


def emulation_text(emulation: dict[str, Any]) -> str:
    """``threads=2, isa=avx2``: the emulation settings a certificate was made with."""
    return ", ".join(f"{k}={emulation[k]}" for k in ("threads", "isa") if emulation.get(k) is not None)


def run(args: argparse.Namespace) -> int:
    from harness.cli.trust import sign_json_file, signing_key, trusted_from
    from harness.workflows.certify import CertifyError, certify

    key = signing_key(args.sign)  # a bad key is refused before anything runs
    check_junit_target(args.junit)
    if args.whitelist_entry and not args.node_version:
        raise CertifyError(
            "--whitelist-entry needs --node-version MAJOR.MINOR.PATCH: the version the node reports to "
            "the relay (its worker's), which the harness cannot know"
        )
    if (args.node_version or args.node_platform) and not args.whitelist_entry:
        raise CertifyError(
            f"--{'node-version' if args.node_version else 'node-platform'} is for --whitelist-entry FILE"
        )
    cert, run_dir = certify(
        Path(args.reference),
        matrix=Path(args.matrix) if args.matrix else None,
        out=Path(args.out) if args.out else None,
        threads=args.threads,
        progress=not args.no_progress,
        trusted_keys=trusted_from(args),
        isa=args.isa,
        device=args.device,
    )
    if cert.emulation:
        print(f"note: {cert.emulation['note']} ({emulation_text(cert.emulation)})")
    if cert.device:
        print(
            f"note: the reference's cells ({', '.join(cert.reference_devices) or 'none'}) ran here on {cert.device}; "
            f"matched ignoring the device"
        )
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


def _whitelist_entry(
    args: argparse.Namespace, cert: Certificate, run_dir: Path, key: Ed25519PrivateKey | None, signed_by: str
) -> None:
    """Write the relay's whitelist entry for what passed, or say in one line why not."""
    from harness.digests import sha256_file
    from harness.workflows.whitelist import WhitelistError, build_entry, nvidia_smi_cards, write_entry

    try:
        doc = build_entry(
            cert,
            sha256_file(run_dir / "certificate.json"),
            args.node_version,
            platform=args.node_platform,
            cards=nvidia_smi_cards(),
            signed_by=signed_by,
        )
    except WhitelistError as err:
        print(f"whitelist entry not written: {err}", file=sys.stderr)
        return
    who = write_entry(Path(args.whitelist_entry), doc, key)
    print(
        f"whitelist entry {args.whitelist_entry} ({'signed with ed25519:' + who if key is not None else 'unsigned'}): "
        f"{doc['key']} for {len(doc['covers'])} passed configuration(s)"
    )
    for line in doc["curl"]:
        print(line)
