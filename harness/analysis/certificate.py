"""A hardware certificate's data: what ``harness certify`` writes, ``harness verify`` reads,
the report renders and the relay whitelist entry is made from.

Why its own module below the renderer: the model lived in the certify workflow, above the
report stage that renders it, so the renderer (and the whitelist and JUnit writers) could only
name it under ``TYPE_CHECKING``, and certify imported the renderer's pool-key fields mid-file.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from harness.analysis.crossrun import DifferenceGroup, RunSide
from harness.vocabulary import CertificateVerdict

CERTIFICATE_SCHEMA_VERSION = 2
#: the network pools nodes by GPU model, then VRAM; outputs also depend on these
POOL_FIELDS = ("gpu_model", "vram_bytes", "runner_version", "platform", "dtype", "quantize_bits")


class ConfigCertificate(BaseModel):
    config_id: str
    task: str
    kind: str
    model: str
    verdict: CertificateVerdict
    reason: str
    compared: int = 0
    levels: dict[str, int] = Field(default_factory=dict)
    worst: str | None = None  # across machines and within each side
    within_reference: str | None = None  # worst level among each side's own repeats/processes
    within_candidate: str | None = None
    first_divergence: int | None = None
    worst_pair: list[str] | None = None  # [reference cell, candidate cell]
    metrics: dict[str, float | int | None] = Field(default_factory=dict)  # of the worst pair
    consensus: dict[str, dict[str, float]] = Field(default_factory=dict)  # rule -> RuleEstimate figures
    network_rule: str | None = None
    network_label: str | None = None
    network: dict[str, float] | None = None  # p_accepted, p_aborted, invalidated (half/half mix)
    findings: dict[str, int] = Field(default_factory=dict)
    pool: dict[str, dict[str, Any]] = Field(default_factory=dict)  # "reference"/"candidate" -> pool key fields
    issues: list[str] = Field(default_factory=list)


class Certificate(BaseModel):
    """History: 1 -- first version. 2 -- network-rule figures, findings and pool keys per
    configuration; pass_with_tolerance only through a named validator."""

    schema_version: int = CERTIFICATE_SCHEMA_VERSION
    harness_version: str
    created_at: float
    passed: bool
    summary: str
    reference: RunSide
    candidate: RunSide
    emulation: dict[str, Any] | None = None
    match: str
    thresholds: dict[str, Any]
    environment_differs: list[str] = Field(default_factory=list)
    groups: list[DifferenceGroup] = Field(default_factory=list)
    configs: list[ConfigCertificate] = Field(default_factory=list)
    not_certified: list[str] = Field(default_factory=list)  # reference configs skipped there or not re-run
    unmatched_candidate: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    reference_signed_by: str | None = None  # "unsigned" or the key that signed the reference bundle
    # --device: the reference's cells re-ran on this device here (matched ignoring the device)
    device: str | None = None
    reference_devices: list[str] = Field(default_factory=list)
