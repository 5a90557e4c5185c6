"""The data model of an analysed run: what the report renders and what gates decide on.

Kept apart from the analysis code and from rendering: rendering decides nothing, it only
shows these fields. ``ANALYSIS_SCHEMA_VERSION`` is written into report.json.
History: 1 -- first version. 2 -- adds ``summary`` (verdict counts, the validation rule the
network would need, findings, a one-line environment) and ``warnings`` (distinct library
warnings with counts); a version-1 document is upgraded by ``upgrade_analysis`` (summary
rebuilt from its configurations, warnings empty: a v1 run's logs were never counted), in
``harness.analysis.saved.upgrade_analysis``. 3 -- pair findings and rule decisions, the named
validator, agreement per pair rule with the network's figures (accepted / aborted /
invalidated), the network rule's figures per configuration (new fields have defaults: a
version-2 document upgrades as is). Added since, with defaults (a document without them reads
as before): ``verdict_dimensions`` (what the gate judged), each dimension's ``worst_pair``, the
replay rule's decisions per configuration and the explained first divergence of each pair,
each dimension's ``not_compared`` pairs and their reason (an isa level at native's own kernel class).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

# Level: report.json is read back by `harness show`: an unknown level is refused there, naming
# the field, not a KeyError later
from harness.vocabulary import VERDICT_TEXT, Level, Verdict  # noqa: F401 (re-exported)

ANALYSIS_SCHEMA_VERSION = 3


class PairResult(BaseModel):
    """One comparison between two executions that should agree."""

    dimension: str  # repeat | process | batch | threads | load | node | seed | dtype
    config_id: str
    a: str  # cell ids
    b: str
    level: Level
    metrics: dict[str, float | int | None] = Field(default_factory=dict)
    first_divergence: int | None = None
    steps_total: int | None = None
    a_artifact: str | None = None
    b_artifact: str | None = None
    stage: str | None = None  # chained tasks: the stage where the divergence began (text | audio)
    finding: str | None = None  # harness.compare.levels.FINDING_TEXT key
    rules: dict[str, bool] = Field(default_factory=dict)  # pair rule -> accepted (applicable rules)
    #: the first divergent step explained (harness.compare.replay.Explanation dump: class benign |
    #: suspicious, each side's gap, the margin); only where the matrix names the replay validator
    explanation: dict[str, Any] | None = None
    #: the libraries whose versions differ between the two executions ("transformers 5.25.0 -> 5.24.0")
    changed: list[str] = Field(default_factory=list)


class DimensionSummary(BaseModel):
    pairs: int = 0
    levels: dict[Level, int] = Field(default_factory=dict)  # level -> count
    worst: Level | None = None
    first_divergence: list[int] = Field(default_factory=list)  # of divergent/tokens-differing pairs
    stages: dict[str, int] = Field(default_factory=dict)  # chained tasks: stage where pairs began to differ
    findings: dict[str, int] = Field(default_factory=dict)  # finding -> pairs
    finding_steps: list[int] = Field(default_factory=list)  # first divergent step of pairs with a finding
    rejected: dict[str, int] = Field(default_factory=dict)  # pair rule -> pairs it rejects
    # [cell a, cell b] of the worst pair (a finding first, then the weakest level, then the
    # earliest divergence); empty when every pair is bitwise: the evidence a CI failure names
    worst_pair: list[str] = Field(default_factory=list)
    explained: dict[str, int] = Field(default_factory=dict)  # divergence class -> pairs (benign | suspicious)
    explanation: str | None = None  # the sentence of the worst explained pair
    changed: list[str] = Field(default_factory=list)  # library versions that differ across its pairs
    #: pairs set aside as no comparison (vocabulary.SAME_KERNELS: both sides ran one kernel
    #: class); counted nowhere else: never agreement, never a level
    not_compared: int = 0
    not_compared_reason: str | None = None


class NetworkFigures(BaseModel):
    """A 3-node validation group as the network scores it (harness.compare.agreement)."""

    rule: str
    label: str  # "network: ..." (the network's rule) or "proposed: ..." (no network rule yet)
    p_accepted: float | None = None
    p_aborted: float | None = None
    invalidated: float | None = None  # expected share of honest executions invalidated (slashable)
    p3of3: float | None = None
    triples: int = 0


class CostSummary(BaseModel):
    executions: int = 0
    latency_s: dict[str, Any] = Field(default_factory=dict)  # harness.analysis.bench.Stats dump (total - load)
    load_s: float | None = None
    peak_memory_bytes: int | None = None
    memory_kind: str | None = None
    real_time_factor: float | None = None  # audio seconds per wall second
    tokens_per_second: float | None = None
    time_to_first_token_s: float | None = None
    latency_samples: list[float] = Field(default_factory=list)  # for the distribution plot


class ConfigNodes(BaseModel):
    """One configuration across the nodes of a fleet run (only when more than one node ran it)."""

    # node key -> worst level vs the reference node ("reference" for the reference node itself)
    levels: dict[str, Level | Literal["reference"]] = Field(default_factory=dict)
    class_verdicts: dict[str, str] = Field(default_factory=dict)  # environment class -> verdict within it
    across_classes: Level | None = None  # worst level between environment classes
    summary: str = ""  # e.g. "ready on H100 and A100; tokens across them"
    consensus: dict[str, dict[str, float]] = Field(default_factory=dict)  # rule -> p3of3/p2of3 on the fleet's mix
    consensus_note: str | None = None


class FleetNode(BaseModel):
    key: str
    hostname: str
    ray_node_id: str | None = None
    env_class: str | None = None
    executions: int = 0
    reference: bool = False


class Fleet(BaseModel):
    """The nodes of a run; the reference node is the one the others are compared against."""

    reference_node: str
    nodes: list[FleetNode] = Field(default_factory=list)
    mix: dict[str, float] = Field(default_factory=dict)  # environment class -> share of the nodes


class ConfigResult(BaseModel):
    config_id: str
    task: str
    kind: str
    model: str
    dtype: str
    quantize_bits: int | None
    device: str
    profile: str
    verdict: Verdict
    reason: str
    decided_by: list[str] = Field(default_factory=list)  # judged dimensions whose pairs decided a not_ready verdict
    counts: dict[str, int] = Field(default_factory=dict)  # status -> count
    dimensions: dict[str, DimensionSummary] = Field(default_factory=dict)
    agreement: dict[str, dict[str, float | int | None]] = Field(default_factory=dict)  # rule -> GroupFigures dump
    network: NetworkFigures | None = None  # the validation group under the kind's network rule
    validator: dict[str, Any] | None = None  # the validator the matrix names for this kind (NamedValidator)
    # the bounds this configuration was compared with, when its calibration entry set them
    thresholds: dict[str, Any] | None = None
    out_of_scope: str | None = None  # why the named calibration has no entry for this configuration
    seed_sensitive: bool | None = None
    seed_note: str | None = None
    dtype_drift: DimensionSummary | None = None
    lint: list[str] = Field(default_factory=list)
    quantization: dict[str, Any] | None = None
    cost: CostSummary = Field(default_factory=CostSummary)
    failures: list[str] = Field(default_factory=list)  # "cell: reason", capped
    nodes: ConfigNodes | None = None  # fleet runs only
    #: the replay rule over this configuration's executions (when the matrix names it): how many
    #: replayed, accepted, were rejected (first reason) or could not be replayed (why)
    replay: dict[str, Any] | None = None


class GateResult(BaseModel):
    config_id: str
    passed: bool
    reason: str


class ModelRow(BaseModel):
    """Model comparison across configurations: determinism verdicts and costs."""

    model: str
    kind: str
    configs: int
    verdicts: dict[str, int]
    best_verdict: str
    median_latency_s: float | None
    peak_memory_bytes: int | None


class LogWarning(BaseModel):
    """One distinct library warning of a run and how often it was seen."""

    source: str  # logger name, or "python warnings" (caught per execution)
    level: str = "WARNING"
    message: str
    count: int = 0  # log lines (first + repeats), or executions that raised it
    where: list[str] = Field(default_factory=list)  # worker log files, or config ids


class Finding(BaseModel):
    """One thing the operator should know, decided by the analysis (renderers only show it)."""

    severity: Literal["critical", "warning", "info"]
    kind: str  # e.g. divergent-dimension, tokens-only, failed, seed-no-effect, problems
    text: str
    dimension: str | None = None
    configs: list[str] = Field(default_factory=list)


class RunSummary(BaseModel):
    """The answer first: what a node operator or network maintainer reads before any table."""

    headline: str  # one sentence: what to do
    verdicts: dict[str, int] = Field(default_factory=dict)  # verdict -> configurations
    rule_needed: str | None = None  # weakest validation rule the accepted configurations need
    rule_by_config: dict[str, str | None] = Field(default_factory=dict)  # None: not acceptable under any rule
    findings: list[Finding] = Field(default_factory=list)  # most severe first
    environment: str = ""


class Analysis(BaseModel):
    schema_version: int = ANALYSIS_SCHEMA_VERSION
    run_id: str
    run_dir: str
    matrix: str
    description: str = ""
    harness_version: str | None = None
    environment: dict[str, Any] = Field(default_factory=dict)
    tiny_models: dict[str, str] = Field(default_factory=dict)
    thresholds: dict[str, Any] = Field(default_factory=dict)
    gate_rules: list[str] = Field(default_factory=list)
    verdict_dimensions: list[str] = Field(default_factory=list)  # the dimensions the gate judges (matrix gates)
    records: int = 0
    evidence: dict[str, Any] = Field(default_factory=dict)  # harness.store.evidence.Evidence counts
    problems: list[str] = Field(default_factory=list)
    configs: list[ConfigResult] = Field(default_factory=list)
    examples: list[PairResult] = Field(default_factory=list)  # worst pair per config, for plots
    gates: list[GateResult] = Field(default_factory=list)
    models: list[ModelRow] = Field(default_factory=list)
    summary: RunSummary | None = None
    warnings: list[LogWarning] = Field(default_factory=list)
    fleet: Fleet | None = None  # runs whose executions came from more than one node
    parallel_note: str | None = None  # set when costs were measured while workers ran side by side

    def summary_lines(self) -> list[str]:
        lines = []
        for c in self.configs:
            net = c.network
            tail = ""
            if net is not None and net.p_accepted is not None:
                tail = (
                    f"  {net.rule}: P(accepted)={net.p_accepted:.2f} P(aborted)={net.p_aborted:.2f} "
                    f"invalidated={net.invalidated:.3f}"
                )
            lines.append(f"{c.verdict:>21}  {c.config_id}{tail}")
        return lines
