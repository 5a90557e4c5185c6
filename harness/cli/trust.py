"""The signing arguments several commands share: ``--sign KEY`` (bundle, certify) and
``--trusted-keys FILE`` (certify, compare, verify), each read into what the store needs or
refused as one line, and signing a JSON document file in place (a certificate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.store.run import StoreError, read_json_file


def trusted_from(args) -> set[str] | None:
    from harness.store.signing import SignatureError, load_trusted_keys

    try:
        return load_trusted_keys(getattr(args, "trusted_keys", None))
    except SignatureError as err:
        raise StoreError(str(err)) from None


def signing_key(path: str | None) -> Any:
    if not path:
        return None
    from harness.store.signing import SignatureError, load_private_key

    try:
        return load_private_key(path)
    except SignatureError as err:
        raise StoreError(str(err)) from None


def sign_json_file(path: Path, key) -> str:
    """Embed a signature into a JSON document file (a certificate); returns the key id."""
    from harness.store.run import atomic_write_json
    from harness.store.signing import sign_document

    doc = read_json_file(path, "certificate")
    signed = sign_document(doc, key)
    atomic_write_json(path, signed)
    return signed["signature"]["key_id"]


def sign_calibration(cal: Any, key: Any) -> Any:
    """``cal`` (a sealed ``harness.spec.calibration.Calibration``) with an Ed25519 signature over
    its digest, for ``--sign KEY`` wherever a calibration file is written. ``key``: a private key
    (``signing_key``) or the path of one; a key that cannot be read is one line (StoreError)."""
    from harness.spec.calibration import DOCUMENT
    from harness.store.signing import sign_sealed

    if isinstance(key, (str, Path)):
        key = signing_key(str(key))
    sealed = cal.sealed()
    return sealed.model_copy(update={"signature": sign_sealed(DOCUMENT, sealed.digest, key)})
