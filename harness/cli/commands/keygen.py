"""``harness keygen NAME``: an Ed25519 key pair (NAME.key, mode 0600, and NAME.pub) for signing."""

from __future__ import annotations

import argparse

from harness.cli.common import EXIT_OK
from harness.errors import StoreError

NAME = "keygen"


def setup_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    s = sub.add_parser(NAME, help="make an Ed25519 key pair for signing bundles and certificates")
    s.add_argument("name", help="writes NAME.key (private, 0600) and NAME.pub")
    s.add_argument("--comment", help="text after the public key (default: the name)")
    return s


def run(args: argparse.Namespace) -> int:
    from harness.store.signing import SignatureError, generate_keypair

    try:
        key, pub = generate_keypair(args.name, args.comment or "")
    except SignatureError as err:
        raise StoreError(str(err)) from None
    print(f"private key {key} (mode 0600: keep it secret)")
    print(f"public key  {pub} (add its line to the verifiers' trusted-keys file)")
    return EXIT_OK
