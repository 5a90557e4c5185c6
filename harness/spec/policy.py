"""Policy: the acceptance thresholds and the CI gates a matrix sets.

Why its own module: they are what the user asks for (a matrix's ``thresholds`` and
``gates``), read by the comparison (thresholds) and the analysis (gates); keeping them in
the spec stage means the matrix never imports the comparison code that applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness import __version__
from harness.errors import HarnessError
from harness.spec.calibration import MAX_REPLAY_MARGIN, Calibration, CalibrationError, Facts, resolve
from harness.store.manifest import first_field_problem
from harness.vocabulary import DEFAULT_JUDGED, DimensionName, NamedRule

#: composite-rule defaults: honest cross-thread/cross-process spread on tiny MusicGen times the
#: calibration margin (harness.analysis.calibration.CALIBRATION_MARGIN), rounded up
WAVEFORM_MAX_ABS = 1e-5
WAVEFORM_REL_L2 = 1e-4


#: the replay rule's default margin (logit units): the largest gap of an honest flip the replay
#: study measured on tiny MusicGen float32 across kernel sets, threads and processes, times its
#: margin (harness calibrate --rule replay); bfloat16 needs its own (``replay_dtypes``)
REPLAY_MARGIN = 0.01


class ReplayBounds(BaseModel):
    """The replay rule's calibration for one dtype: the largest gap a flipped near-tie may have
    (logit units) and the decoder bounds (the candidate's waveform against the validator's
    decoding of its codes)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    margin: float = Field(ge=0, le=MAX_REPLAY_MARGIN)
    waveform_max_abs: float = Field(ge=0)
    waveform_rel_l2: float = Field(ge=0)


class Thresholds(BaseModel):
    """Acceptance bars; rel-L2 <= 0.10 and cosine >= 0.99 is a published audio bar."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    rel_l2_max: float = Field(0.10, ge=0)
    cosine_min: float = Field(0.99, ge=-1, le=1)
    hamming_max: int = Field(8, ge=0)
    fingerprint_bits: int = Field(64, gt=0, le=4096)  # bounded: 1e8 bits asked for 8.7 GiB
    max_length_mismatch: float = Field(0.01, ge=0, le=1)
    #: the composite rule's waveform bounds (equal codes AND max-abs/rel-L2 within these); a
    #: matrix states its model's calibration from `harness calibrate` (docs/calibration.md)
    waveform_max_abs: float = Field(WAVEFORM_MAX_ABS, ge=0)
    waveform_rel_l2: float = Field(WAVEFORM_REL_L2, ge=0)
    #: the replay rule: the margin of a flipped near-tie, and per-dtype calibrations (margin and
    #: decoder bounds) that replace the global ones for that dtype (`harness calibrate --rule replay`)
    replay_margin: float = Field(REPLAY_MARGIN, ge=0, le=MAX_REPLAY_MARGIN)
    replay_dtypes: dict[Literal["float32", "bfloat16", "float16"], ReplayBounds] = Field(default_factory=dict)


class NamedValidator(BaseModel):
    """A matrix naming the validator a kind's tolerance verdict may rest on, with its measured
    error rates on this model. A configuration passes on a non-bitwise level only through a
    named validator whose false accept is <= 1%. The rates are typed by hand (``false_accept``,
    ``false_reject``) or come from a calibration file (``calibration = "FILE"``, written by
    `harness calibrate`): the matrix loader embeds the file, sealed by its
    digest, so a run's manifest carries the bounds and scope its verdicts rest on."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    rule: NamedRule
    false_accept: float | None = Field(None, ge=0, le=1)
    false_reject: float | None = Field(None, ge=0, le=1)
    pairs: int = Field(0, ge=0)  # held-out pairs the rates come from
    source: str = ""
    calibration: Calibration | None = None  # the named file's content (embedded by the loader)
    calibration_file: str | None = None  # the file as the matrix names it
    #: refuse to run unless the calibration is signed by a trusted key (docs/trust.md)
    require_signed: bool = False
    # set per configuration from its calibration entry: the honest sources its bounds cover
    sources: list[str] | None = None
    notes: list[str] = Field(default_factory=list)
    signed_by: str | None = None  # the calibration's signer label (``unsigned``), set with ``sources``

    @model_validator(mode="after")
    def _rates_or_calibration(self) -> NamedValidator:
        cal = self.calibration
        if cal is None:
            if self.false_accept is None or self.false_reject is None:
                raise ValueError("give false_accept and false_reject, or a calibration file")
            return self
        if cal.digest != cal.content_digest():
            raise ValueError(
                f"the calibration {self.calibration_file or ''} does not match its digest (edited "
                f"after it was written?); make it again with `harness calibrate`"
            )
        if cal.rule != self.rule:
            raise ValueError(f"the calibration is for the {cal.rule} rule, not {self.rule}")
        where = f"the calibration {self.calibration_file or ''}".rstrip()
        try:
            check = cal.signer(None, where)  # a signature present must hold over the digest
        except CalibrationError as err:
            raise ValueError(str(err)) from None
        if self.require_signed and not check.signed:
            raise ValueError(f"{where}: require_signed, but the calibration is unsigned")
        return self

    def signer_label(self) -> str:
        """``unsigned`` or who signed the calibration, and whether the key was checked."""
        if self.calibration is None:
            return "unsigned"
        check = self.calibration.signer(None, self.calibration_file or "calibration")
        if not check.signed:
            return check.label
        how = "a trusted key, required by the matrix" if self.require_signed else "key not checked at load"
        return f"signed by ed25519:{check.key_id} ({how})"

    @property
    def calibrated(self) -> bool:
        """Rates and bounds measured for this configuration (a resolved calibration entry)."""
        return self.sources is not None


#: a named validator may carry a verdict only when its measured false accept is at most this
MAX_FALSE_ACCEPT = 0.01


FailOn = Literal["not_ready", "ready_with_tolerance", "failed", "seed_insensitive"]
DEFAULT_FAIL_ON: tuple[FailOn, ...] = ("not_ready", "failed")


class Gates(BaseModel):
    """Which verdicts fail ``harness run`` (its exit code is how CI gates)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    fail_on: list[FailOn] = Field(default_factory=lambda: list(DEFAULT_FAIL_ON))
    # Comparisons that decide the verdict; the others are still measured and reported.
    # harness.vocabulary.DEFAULT_JUDGED unless given (``stack`` is judged only when named).
    verdict_dimensions: list[DimensionName] = Field(default_factory=lambda: list(DEFAULT_JUDGED), min_length=1)


class PolicyError(HarnessError, ValueError):
    """A run's recorded matrix policy (thresholds, gates, validators) that does not validate."""


@dataclass(frozen=True)
class Policy:
    """What a run's matrix decided about judging it, as its manifest records it."""

    thresholds: Thresholds
    gates: Gates
    validators: dict[str, NamedValidator]


def policy_of(spec: Any, where: str) -> Policy:
    """Thresholds, gates and named validators of a matrix spec document (a manifest's
    ``matrix.spec``), validated together. Why here: analysis, cross-run comparison and
    certification each read them from manifests a user can edit; an invalid value is one line
    naming the field (``matrix.spec.validators.audio.source``), never a library's error."""
    spec = spec if isinstance(spec, dict) else {}
    parts: dict[str, dict[str, Any]] = {}
    for name in ("thresholds", "gates", "validators"):
        value = spec.get(name) or {}
        if not isinstance(value, dict):
            raise PolicyError(
                f"{where}: manifest field matrix.spec.{name}: expected a table, got {type(value).__name__}"
            )
        parts[name] = value

    def check(section: str, model: type[BaseModel], doc: Any) -> Any:
        try:
            return model.model_validate(doc)
        except ValidationError as err:
            raise PolicyError(f"{where}: manifest field {first_field_problem(err, f'matrix.spec.{section}')}") from None

    known = {k: v for k, v in parts["thresholds"].items() if k in Thresholds.model_fields}
    return Policy(
        thresholds=check("thresholds", Thresholds, known),
        gates=check("gates", Gates, parts["gates"]),
        validators={
            kind: check(f"validators.{kind}", NamedValidator, doc) for kind, doc in parts["validators"].items()
        },
    )


def release(version: str) -> str:
    """A harness version's release (major.minor): a calibration holds for the release it was
    measured with; a patch release changes no comparison (the versioning rule, docs/trust.md)."""
    return ".".join(version.split(".")[:2])


@dataclass(frozen=True)
class ConfigPolicy:
    """What judges one configuration: its validator (rates resolved from the calibration entry
    whose scope holds it), the thresholds its pairs are compared with, and, when the named
    calibration has no entry for it, the true reason (then no finding is drawn from bounds
    that were never measured for it)."""

    validator: NamedValidator | None
    thresholds: Thresholds
    out_of_scope: str | None = None

    @property
    def bounds_from(self) -> str:
        """Where the composite bounds come from, in the words a finding uses."""
        v = self.validator
        if v is not None and v.calibrated:
            return (
                f"the bounds measured on honest {', '.join(v.sources or [])} pairs for this configuration "
                f"({v.calibration_file or 'calibration'})"
            )
        return "the waveform bounds the matrix gives ([thresholds] waveform_max_abs, waveform_rel_l2)"


def config_policy(policy: Policy, facts: Facts) -> ConfigPolicy:
    """The validator and bounds for one configuration. A named calibration decides only inside
    its scope (kind, model, weights, dtype, quantization, token range, kernel classes)."""
    named = policy.validators.get(facts.kind)
    if named is None or named.calibration is None:
        return ConfigPolicy(named, policy.thresholds)
    entry, why = resolve(named.calibration, facts)
    if entry is None:
        return ConfigPolicy(None, policy.thresholds, why)
    made_with = release(entry.scope.harness_version)
    if made_with != release(__version__):
        return ConfigPolicy(
            None,
            policy.thresholds,
            f"the calibration was measured with harness {entry.scope.harness_version}, this is {__version__} "
            f"(another release may replay and compare differently: run the study again)",
        )
    rates = named.model_copy(
        update={
            "calibration": None,
            "false_accept": entry.false_accept.rate,
            "false_reject": entry.false_reject.rate,
            "pairs": entry.false_accept.pairs + entry.false_reject.pairs,
            "source": named.calibration.made_by,
            "sources": list(entry.scope.sources),
            "notes": list(entry.notes),
            "signed_by": named.signer_label(),
        }
    )
    update: dict[str, Any] = {"waveform_max_abs": entry.waveform_max_abs, "waveform_rel_l2": entry.waveform_rel_l2}
    if entry.replay_margin is not None:  # a replay calibration: its margin and decoder bounds, for this configuration
        update.update(replay_margin=entry.replay_margin, replay_dtypes={})
    bounds = policy.thresholds.model_copy(update=update)
    return ConfigPolicy(rates, bounds)


def margin_source(cp: ConfigPolicy) -> str:
    """Where a replay verdict's margin comes from, in the words the output and the report show:
    a calibration (and who signed it), or ``uncalibrated`` (docs/trust.md: the margin policy)."""
    v = cp.validator
    if v is not None and v.calibrated and v.rule == "replay":
        return f"calibrated: {v.calibration_file or 'calibration'}, {v.signed_by or 'unsigned'}"
    return "uncalibrated: the matrix's [thresholds] replay_margin (or the default), no calibration file"
