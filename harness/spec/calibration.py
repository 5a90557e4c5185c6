"""Calibration files: a validator's bounds and measured error rates, with the scope they hold in.

Why: a tolerance rule's bounds are measured on honest pairs of one configuration on the
kernels it was run with. Applied elsewhere (bfloat16 with float32's bounds, or a CPU kind the
study never ran) they call an honest node a cheat, or pass a cheat. So ``harness calibrate
RUN... --out FILE`` writes what it measured with its scope, a matrix names the file
(``[validators.audio] calibration = "calibrations/tiny-musicgen.json"``), and the analysis
uses an entry only for a configuration inside its scope; outside it the verdict says so and
no finding is drawn from bounds that do not apply.

Format (``CALIBRATION_SCHEMA_VERSION``): 1 -- first version. 2 -- ``rule`` may be ``replay``
(harness calibrate --rule replay): its entries carry ``replay_margin`` (the largest gap a flipped near-tie
may have) and their waveform bounds are the decoder bounds (a candidate's waveform against the
validator's decoding of its codes); a version-1 file reads as it is. 3 -- made by ``harness
calibrate`` from runs and bundles: ``sources`` may also be ``batch``, ``load``, ``node``,
``device`` and ``machine`` (harness.vocabulary.CALIBRATION_SOURCES), and the scope records the
environment of every execution paired: ``gpus`` (GPU model, driver and CUDA version; empty: CPU
only) and ``libraries`` (the torch and transformers versions). A version-1 or 2 file reads as
it is (those fields absent: not recorded, so not checked) and keeps its digest. The ``digest``
is the sha256 of the canonical JSON of everything else; a file whose digest does not match is
refused.

Trust (docs/trust.md): the digest is unkeyed, so anyone can edit and reseal a file. A calibration
may carry an Ed25519 ``signature`` over its digest (``--sign KEY`` where it is written;
``harness.store.signing.sign_sealed``); under trusted keys an unsigned or foreign-signed file is
refused, otherwise it is labelled ``unsigned``. Every value is also checked for plausibility
before it can judge anything: strict types in a file (no number as a string or bool), rates that agree
with their counts and interval, waveform bounds within the signal's range and a replay margin
at most ``MAX_REPLAY_MARGIN``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.digests import digest_json, strict_json_loads
from harness.errors import HarnessError
from harness.vocabulary import CalibrationSource

if TYPE_CHECKING:
    from harness.store.signing import SignatureCheck

CALIBRATION_SCHEMA_VERSION = 3
MAX_CALIBRATION_BYTES = 4 * 1024 * 1024
#: the largest replay margin (logit units) a calibration or a matrix may give: above the largest
#: margin any study measured (bfloat16 tiny MusicGen: 0.5 on a Zen 4, 0.375 on a Sapphire Rapids)
#: and below the smallest gap of a cheat it rejected (another seed, 3.8); a larger one would
#: accept another seed's tokens
MAX_REPLAY_MARGIN = 1.0
#: waveform bounds compare two signals in [-1, 1]: max abs and rel-L2 (over the larger norm) are
#: at most 2, so a larger bound accepts any waveform at all
MAX_WAVEFORM_BOUND = 2.0
#: a rate is errors / pairs, stated to this tolerance (JSON floats round-trip exactly; studies round nothing)
RATE_TOLERANCE = 1e-9
#: the libraries whose versions a scope records (a calibration measured under torch 2.13 says
#: nothing about torch 2.14's kernels)
SCOPE_LIBRARIES = ("torch", "transformers")
#: scope fields added in version 3: absent (None) in older files, and then not checked
_V3_SCOPE_FIELDS = ("gpus", "libraries")


class CalibrationError(HarnessError, ValueError):
    """A calibration file that cannot be used; one line naming the file and the field."""


class CalibrationTrustError(CalibrationError):
    """A calibration whose origin does not hold: its digest does not match its content, its
    signature does not verify, or it is not signed by a trusted key (``NOT VERIFIED``, exit 1)."""


class Rate(BaseModel):
    """A measured rate on held-out pairs, with its Wilson 95% interval. The numbers must agree
    (a rate of 0 with 16 errors in 16 pairs decides as if nothing failed)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    rate: float = Field(ge=0, le=1)
    low: float = Field(ge=0, le=1)
    high: float = Field(ge=0, le=1)
    errors: int = Field(ge=0)
    pairs: int = Field(ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Rate:
        if self.errors > self.pairs:
            raise ValueError(f"errors {self.errors} > pairs {self.pairs}")
        if not self.low <= self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        measured = self.errors / self.pairs if self.pairs else 0.0
        if abs(self.rate - measured) > RATE_TOLERANCE:
            raise ValueError(f"rate {self.rate} is not errors / pairs ({self.errors}/{self.pairs})")
        if not self.low - RATE_TOLERANCE <= self.rate <= self.high + RATE_TOLERANCE:
            raise ValueError(f"rate {self.rate} is outside its interval [{self.low}, {self.high}]")
        return self


class Scope(BaseModel):
    """Where an entry's bounds were measured: outside it the entry decides nothing."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    kind: str
    model: str
    weights_sha256: str | None = None
    dtype: str
    quantize_bits: int | None = None
    new_tokens: tuple[int, int]  # the range of the tasks' generation_config.max_new_tokens the study ran
    sources: list[CalibrationSource]
    kernel_classes: list[str]  # harness.isa.kernel_class of every execution the study paired
    harness_version: str
    #: "GPU model, driver D, CUDA C" of every GPU execution paired ([]: CPU only; None: not recorded)
    gpus: list[str] | None = None
    libraries: dict[str, list[str]] | None = None  # SCOPE_LIBRARIES -> versions paired (None: not recorded)


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    scope: Scope
    waveform_max_abs: float = Field(ge=0, le=MAX_WAVEFORM_BOUND)
    waveform_rel_l2: float = Field(ge=0, le=MAX_WAVEFORM_BOUND)
    false_reject: Rate
    false_accept: Rate
    notes: list[str] = Field(default_factory=list)  # e.g. a source left out of the scope, and why
    replay_margin: float | None = Field(None, ge=0, le=MAX_REPLAY_MARGIN)  # replay entries only (logit units)


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    schema_version: int = Field(CALIBRATION_SCHEMA_VERSION, ge=1)
    rule: Literal["composite", "replay"] = "composite"
    made_by: str  # the study and its size
    entries: list[Entry] = Field(min_length=1)
    digest: str = ""
    #: Ed25519 over the digest (harness.store.signing.sign_sealed); None: unsigned
    signature: dict[str, str] | None = None

    def content_digest(self) -> str:
        doc = self.model_dump(mode="json", exclude={"digest", "signature"})
        for entry in doc["entries"]:  # a version-1 file (no replay_margin) keeps its digest
            if entry.get("replay_margin") is None:
                entry.pop("replay_margin", None)
            for name in _V3_SCOPE_FIELDS:  # and a version-1 or 2 file (no environment) too
                if entry["scope"].get(name) is None:
                    entry["scope"].pop(name, None)
        return digest_json(doc)

    def sealed(self) -> Calibration:
        """The calibration with its digest recomputed; any signature is dropped (it signed the old
        digest), so a resealed file is unsigned until signed again."""
        return self.model_copy(update={"digest": self.content_digest(), "signature": None})

    def signer(self, trusted: set[str] | None, where: str) -> SignatureCheck:
        """Who signed this calibration (``unsigned`` when nobody): the signature must verify
        over its digest; with ``trusted`` keys it must be one of them (else CalibrationError)."""
        from harness.store.signing import SignatureError, check_sealed

        try:
            return check_sealed(DOCUMENT, self.content_digest(), self.signature, trusted, where)
        except SignatureError as err:
            raise CalibrationTrustError(str(err)) from None


#: what a calibration's signature says it signs (with the digest), so it cannot be replayed onto another document
DOCUMENT = "harness calibration"


def _first_bad_text(doc: Any, path: str = "$") -> str | None:
    """The path of the first string that is not valid Unicode (a lone surrogate from a JSON
    ``\\ud800`` escape), which no digest or report can encode."""
    if isinstance(doc, str):
        try:
            doc.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        step = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"
        found = _first_bad_text(key, step) if isinstance(key, str) else None
        found = found or _first_bad_text(value, step)
        if found:
            return found
    return None


def parse_calibration(doc: Any, where: str) -> Calibration:
    """A calibration document, its version and digest checked; errors name ``where`` and the field."""
    from harness.store.manifest import first_field_problem

    if not isinstance(doc, dict):
        raise CalibrationError(f"{where}: a calibration file is a JSON object, got {type(doc).__name__}")
    version = doc.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > CALIBRATION_SCHEMA_VERSION:
        raise CalibrationError(
            f"{where}: calibration schema_version {version} is newer than this harness reads "
            f"({CALIBRATION_SCHEMA_VERSION})"
        )
    bad = _first_bad_text(doc)
    if bad:
        raise CalibrationError(f"{where}: {bad}: not valid Unicode (a lone surrogate)")
    try:  # strict as JSON: a number given as a string or a bool is refused (a list may still be a tuple)
        cal = Calibration.model_validate_json(json.dumps(doc), strict=True)
    except ValidationError as err:
        raise CalibrationError(f"{where}: {first_field_problem(err, '$')}") from None
    if cal.digest != cal.content_digest():
        raise CalibrationTrustError(
            f"{where}: digest does not match the content (edited after it was written?); "
            f"make it again with `harness calibrate`"
        )
    return cal


def load_calibration(path: str | Path) -> Calibration:
    from harness.store.files import read_input_file  # bounded: a device or FIFO is refused unread

    path = Path(path)
    raw = read_input_file(path, MAX_CALIBRATION_BYTES, CalibrationError)
    try:
        doc = strict_json_loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CalibrationError(f"{path}: not valid JSON ({str(err).splitlines()[0]})") from None
    return parse_calibration(doc, str(path))


def new_tokens_asked(task_doc: Any) -> int | None:
    """``max_new_tokens`` as a task document asks it (a calibration's unit), or None."""
    gen = task_doc.get("generation_config") if isinstance(task_doc, dict) else None
    asked = gen.get("max_new_tokens") if isinstance(gen, dict) else None
    return asked if isinstance(asked, int) else None


@dataclass(frozen=True)
class Facts:
    """What a configuration is, as the analysis knows it from its records."""

    kind: str
    model: str
    dtype: str
    quantize_bits: int | None
    weights_sha256: str | None = None
    new_tokens: int | None = None  # the task's generation_config.max_new_tokens (the scope's unit)
    kernel_classes: frozenset[str] = field(default_factory=frozenset)
    sources: frozenset[str] = field(default_factory=frozenset)  # judged dimensions with non-bitwise pairs
    gpus: frozenset[str] = field(default_factory=frozenset)  # "GPU model, driver D, CUDA C" (see gpu_label)
    libraries: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (SCOPE_LIBRARIES name, version)


def gpu_label(environment: dict[str, Any]) -> list[str]:
    """Each GPU of an environment fingerprint (harness.execution.env.fingerprint) as a scope
    names it: the model, the driver and the CUDA version (a driver or CUDA change can change
    the kernels, so it is another class)."""
    names = environment.get("gpu_names") or []
    return sorted(
        {
            f"{n}, driver {environment.get('driver') or '?'}, CUDA {environment.get('cuda_runtime') or '?'}"
            for n in names
        }
    )


def library_versions(environment: dict[str, Any]) -> frozenset[tuple[str, str]]:
    """(name, version) of the SCOPE_LIBRARIES an environment fingerprint records."""
    libs = environment.get("libraries") or {}
    libs = libs if isinstance(libs, dict) else {}
    return frozenset((n, str(libs[n])) for n in SCOPE_LIBRARIES if libs.get(n))


def precision_name(dtype: str, bits: int | None) -> str:
    """``float32``, ``float32 8-bit``: a configuration's precision as calibrations name it."""
    return dtype + (f" {bits}-bit" if bits else "")


def config_name(kind: str, model: str, dtype: str, bits: int | None) -> str:
    """``audio tiny:musicgen float32 8-bit``: a configuration as calibrations name it."""
    return f"{kind} {model} {precision_name(dtype, bits)}"


def resolve(cal: Calibration, facts: Facts) -> tuple[Entry | None, str | None]:
    """The entry whose scope holds ``facts``, or None with the true reason it has none."""
    same = [e for e in cal.entries if e.scope.kind == facts.kind and e.scope.model == facts.model]
    if not same:
        return None, f"no calibrated validator for {facts.kind} {facts.model}"
    config = [e for e in same if e.scope.dtype == facts.dtype and e.scope.quantize_bits == facts.quantize_bits]
    if not config:
        have = ", ".join(sorted({precision_name(e.scope.dtype, e.scope.quantize_bits) for e in same}))
        return None, (
            f"no calibrated validator for {config_name(facts.kind, facts.model, facts.dtype, facts.quantize_bits)}"
            f" (calibrated: {have})"
        )
    # several entries may calibrate one configuration, each on the machines it was measured on
    # (e.g. one made on an AMD Zen 4 and one on an Intel CPU with AMX): the first that holds wins
    reasons = [_outside(entry, facts) for entry in config]
    for entry, why in zip(config, reasons, strict=True):
        if why is None:
            return entry, None
    others, first = len(config) - 1, str(reasons[0])  # every entry gave its reason
    return None, first + (
        f" (and the {others} other entr{'y' if others == 1 else 'ies'} for this configuration do not hold it either)"
        if others
        else ""
    )


def _outside(entry: Entry, facts: Facts) -> str | None:
    """What of ``facts`` lies outside ``entry``'s scope (None: nothing)."""
    scope = entry.scope
    if facts.weights_sha256 and scope.weights_sha256 and facts.weights_sha256 != scope.weights_sha256:
        return (
            f"the calibration was measured on other weights of {facts.model} "
            f"({scope.weights_sha256[:12]}, these are {facts.weights_sha256[:12]})"
        )
    if facts.new_tokens is not None and not scope.new_tokens[0] <= facts.new_tokens <= scope.new_tokens[1]:
        return (
            f"max_new_tokens {facts.new_tokens} is outside the calibrated range "
            f"{scope.new_tokens[0]}-{scope.new_tokens[1]}"
        )
    outside = sorted(facts.kernel_classes - set(scope.kernel_classes))
    if outside:
        return (
            f"kernel class {', '.join(outside)} is outside the calibration "
            f"(calibrated: {', '.join(scope.kernel_classes)})"
        )
    if scope.gpus is not None:
        gpus = sorted(facts.gpus - set(scope.gpus))
        if gpus:
            have = "; ".join(scope.gpus) or "CPU only"
            return f"GPU {'; '.join(gpus)} is outside the calibration (calibrated: {have})"
    if scope.libraries is not None:
        libs = sorted((n, v) for n, v in facts.libraries if n in scope.libraries and v not in scope.libraries[n])
        if libs:
            have = ", ".join(f"{n} {'/'.join(scope.libraries[n])}" for n, _ in libs)
            return f"{', '.join(f'{n} {v}' for n, v in libs)} is outside the calibration (calibrated: {have})"
    missing = sorted(facts.sources - set(scope.sources))
    if missing:
        return uncalibrated_sources(missing, scope.sources, entry.notes)
    return None


def uncalibrated_sources(missing: Sequence[str], calibrated: Sequence[str], notes: Sequence[str]) -> str:
    """Why honest differences from ``missing`` sources cannot be judged by this entry (its notes
    say why a source was left out of its scope)."""
    why = f": {'; '.join(notes)}" if notes else ""
    return (
        f"honest source {', '.join(missing)} was not calibrated for this configuration "
        f"(calibrated: {', '.join(calibrated)}){why}"
    )
