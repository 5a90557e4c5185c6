"""The signing arguments several commands share: ``--sign KEY`` (bundle, certify) and
``--trusted-keys FILE`` (certify, compare, verify), each read into what the store needs or
refused as one line, and signing a JSON document file in place (a certificate)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import StoreError
from harness.store.files import read_json_file

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from harness.spec.calibration import Calibration


def trusted_from(args: argparse.Namespace) -> set[str] | None:
    from harness.store.signing import SignatureError, load_trusted_keys

    try:
        return load_trusted_keys(getattr(args, "trusted_keys", None))
    except SignatureError as err:
        raise StoreError(str(err)) from None


def signing_key(path: str | None) -> Ed25519PrivateKey | None:
    if not path:
        return None
    from harness.store.signing import SignatureError, load_private_key

    try:
        return load_private_key(path)
    except SignatureError as err:
        raise StoreError(str(err)) from None


def sign_json_file(path: Path, key: Ed25519PrivateKey) -> str:
    """Embed a signature into a JSON document file (a certificate); returns the key id."""
    from harness.store.run import atomic_write_json
    from harness.store.signing import sign_document

    doc = read_json_file(path, "certificate")
    signed = sign_document(doc, key)
    atomic_write_json(path, signed)
    key_id: str = signed["signature"]["key_id"]  # sign_document's block: hex strings
    return key_id


def sign_calibration(cal: Calibration, key: Ed25519PrivateKey | str | Path) -> Calibration:
    """``cal`` (a sealed ``harness.spec.calibration.Calibration``) with an Ed25519 signature over
    its digest, for ``--sign KEY`` wherever a calibration file is written. ``key``: a private key
    (``signing_key``) or the path of one; a key that cannot be read is one line (StoreError)."""
    from harness.spec.calibration import DOCUMENT
    from harness.store.signing import sign_sealed

    if isinstance(key, (str, Path)):
        loaded = signing_key(str(key))
        if loaded is None:  # signing_key reads an empty path as "no key": signing needs one
            raise StoreError("no signing key: an empty key path")
        key = loaded
    sealed = cal.sealed()
    return sealed.model_copy(update={"signature": sign_sealed(DOCUMENT, sealed.digest, key)})
