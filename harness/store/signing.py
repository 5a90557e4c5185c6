"""Ed25519 signatures for bundles and certificates: who produced them, not only that they are whole.

Why: a bundle's digests prove integrity, not authorship; anyone can edit a run, recompute every
member hash and the archive trailer, and the result loads as genuine. A signature over the
bundle's file table (which holds the sha256 of every member) can only be made with the
operator's private key, so a consistently re-hashed bundle no longer verifies, and a bundle
re-signed with another key is refused unless that key is trusted.

Formats (``cryptography``'s Ed25519, RFC 8032):
  - private key: PKCS#8 PEM, written with mode 0600 (``harness keygen NAME`` -> NAME.key)
  - public key:  one line ``ed25519 <64 hex> [comment]`` (NAME.pub); a trusted-keys file is
    any number of such lines (``#`` comments allowed)
  - signature (embedded as ``"signature"`` in bundle.json / certificate.json):
    ``{"algorithm": "ed25519", "public_key": hex, "key_id": first 16 hex of sha256(key),
    "value": hex}`` over the canonical JSON of the document without its ``signature``.
Trusted keys come from ``--trusted-keys FILE`` or, when not given, ``$HARNESS_TRUSTED_KEYS``.
A sealed document (a calibration, whose own ``digest`` covers everything else) is signed over
``{"document": NAME, "digest": DIGEST}`` (``sign_sealed``): its content format can change
without invalidating signatures, and the signature holds only while the digest does.
Key files are read with the store's bounded reader: a FIFO or /dev/zero is refused unread.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.digests import canonical_json

if TYPE_CHECKING:  # imported where used: an unsigned bundle is read without cryptography
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ALGORITHM = "ed25519"
TRUSTED_KEYS_ENV = "HARNESS_TRUSTED_KEYS"


#: a trusted-keys file or a private key larger than this is not one (a PEM key is ~120 bytes)
MAX_KEY_FILE_BYTES = 1024 * 1024


class SignatureError(ValueError):
    """A key or signature that cannot be used; the message names the file and what failed."""


def _key_name_problem(prefix: str, comment: str) -> str | None:
    """Why ``keygen`` must refuse this name or comment: a control character would put a second
    line (another key) in the ``.pub`` file; an empty, ``.`` or ``..`` name writes ``..key``."""
    if Path(prefix).name in ("", ".", "..") or prefix.endswith(("/", os.sep)):
        return f"{prefix!r}: the key needs a file name (keygen NAME writes NAME.key and NAME.pub)"
    for what, text in (("name", prefix), ("comment", comment)):
        bad = next((c for c in text if ord(c) < 32 or ord(c) == 127 or 0x80 <= ord(c) < 0xA0), None)
        if bad is not None:
            return f"{text!r}: the {what} holds a control character ({bad!r}); a .pub file is one line"
    return None


def key_id(public_hex: str) -> str:
    return hashlib.sha256(bytes.fromhex(public_hex)).hexdigest()[:16]


def _public_hex(private: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def generate_keypair(prefix: str | Path, comment: str = "") -> tuple[Path, Path]:
    """Write ``prefix.key`` (0600, refused if it exists) and ``prefix.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from harness.store.files import atomic_write_bytes

    problem = _key_name_problem(str(prefix), comment)
    if problem:
        raise SignatureError(problem)
    prefix = Path(prefix)
    key_path, pub_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for path in (key_path, pub_path):
        if os.path.lexists(path):
            raise SignatureError(f"{path}: already exists; keygen never overwrites a key")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public = _public_hex(private)
    atomic_write_bytes(pub_path, f"{ALGORITHM} {public} {comment or prefix.name}\n".encode())
    return key_path, pub_path


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from harness.store.files import read_input_file

    path = Path(path)
    data = read_input_file(path, MAX_KEY_FILE_BYTES, SignatureError)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise SignatureError(f"{path}: not an unencrypted PEM private key ({str(err).splitlines()[0]})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 private key")
    return key


def load_trusted_keys(path: str | Path | None) -> set[str] | None:
    """Hex public keys from a trusted-keys file (or $HARNESS_TRUSTED_KEYS); None when neither."""
    if path is None:
        path = os.environ.get(TRUSTED_KEYS_ENV) or None
        if path is None:
            return None
    from harness.store.files import read_input_file

    path = Path(path)
    raw = read_input_file(path, MAX_KEY_FILE_BYTES, SignatureError)
    try:
        text = raw.decode("utf-8-sig")  # a BOM (a Windows editor's) is not part of the first line
    except UnicodeDecodeError as err:
        raise SignatureError(f"{path}: cannot read the trusted-keys file (not UTF-8: {err.reason})") from None
    keys: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        hexkey = parts[1] if len(parts) > 1 and parts[0] == ALGORITHM else parts[0]
        try:
            if len(bytes.fromhex(hexkey)) != 32:
                raise ValueError
        except ValueError:
            raise SignatureError(
                f"{path}:{number}: not an Ed25519 public key line ('ed25519 <64 hex> [comment]')"
            ) from None
        keys.add(hexkey.lower())
    if not keys:
        raise SignatureError(f"{path}: the trusted-keys file holds no key")
    return keys


def sign_document(doc: dict[str, Any], private: Ed25519PrivateKey) -> dict[str, Any]:
    """``doc`` with a ``signature`` over its canonical JSON (any old signature replaced)."""
    body = {k: v for k, v in doc.items() if k != "signature"}
    public = _public_hex(private)
    value = private.sign(canonical_json(body)).hex()
    return {
        **body,
        "signature": {"algorithm": ALGORITHM, "public_key": public, "key_id": key_id(public), "value": value},
    }


@dataclass(frozen=True)
class SignatureCheck:
    signed: bool
    key_id: str | None = None
    trusted: bool | None = None  # None: no trusted keys were given

    @property
    def label(self) -> str:
        if not self.signed:
            return "unsigned"
        who = f"signed by {ALGORITHM}:{self.key_id}"
        return who + (
            ""
            if self.trusted
            else " (key not checked against trusted keys)"
            if self.trusted is None
            else " (untrusted key)"
        )


def check_document(doc: dict[str, Any], trusted: set[str] | None, where: str) -> SignatureCheck:
    """Verify ``doc``'s signature. A present signature must verify (else SignatureError);
    with ``trusted`` keys the document must be signed by one of them. An unsigned document
    needs no cryptography library (a machine without it still reads unsigned bundles); a signed
    one without it is refused naming the missing package, not reported as an altered archive."""
    sig = doc.get("signature")
    if sig is None:
        if trusted is not None:
            raise SignatureError(f"{where}: unsigned, but trusted keys were given: refused (sign it with `--sign KEY`)")
        return SignatureCheck(signed=False)
    if not isinstance(sig, dict) or sig.get("algorithm") != ALGORITHM:
        raise SignatureError(f"{where}: signature is malformed or not {ALGORITHM}")
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError as err:
        raise SignatureError(
            f"{where}: signed, but its signature cannot be checked here: the cryptography "
            f"package is not importable ({err})"
        ) from None
    try:
        public_hex = str(sig["public_key"]).lower()
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
        value = bytes.fromhex(str(sig["value"]))
    except (KeyError, ValueError):
        raise SignatureError(f"{where}: signature is malformed (public_key or value)") from None
    body = {k: v for k, v in doc.items() if k != "signature"}
    try:
        public.verify(value, canonical_json(body))
    except InvalidSignature:
        raise SignatureError(
            f"{where}: signature does not verify: the signed content was changed after "
            f"signing (key {key_id(public_hex)})"
        ) from None
    if trusted is not None and public_hex not in trusted:
        raise SignatureError(f"{where}: signed by key {key_id(public_hex)}, which is not in the trusted keys: refused")
    return SignatureCheck(signed=True, key_id=key_id(public_hex), trusted=None if trusted is None else True)


def _sealed_body(document: str, digest: str) -> dict[str, Any]:
    return {"document": document, "digest": digest}


def sign_sealed(document: str, digest: str, private: Ed25519PrivateKey) -> dict[str, str]:
    """The signature block of a sealed document (``document`` names its format): Ed25519 over
    ``{"document", "digest"}``, so it holds exactly while the document's digest does."""
    signed = sign_document(_sealed_body(document, digest), private)
    return dict(signed["signature"])


def check_sealed(
    document: str, digest: str, signature: dict[str, Any] | None, trusted: set[str] | None, where: str
) -> SignatureCheck:
    """``check_document`` for a sealed document's signature block (None: unsigned)."""
    body = _sealed_body(document, digest)
    return check_document(body if signature is None else {**body, "signature": signature}, trusted, where)
