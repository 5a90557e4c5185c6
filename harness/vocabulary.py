"""The one spelling of the harness's concepts: comparison levels, pair rules, verdicts and
comparison dimensions, with their order, meaning and defaults.

Why one leaf module: these names travel through every stage (matrix policy, comparison,
analysis, reports, certificates). Spelt in several places, a new one (a dimension such as
``isa``) had to be found in each, and the lists drifted: the summary judged a shorter default
set of dimensions than the gates did. Every other module imports them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

#: comparison levels between two outputs, strongest first (DESIGN.md s4)
LEVELS = ("bitwise", "tokens", "tolerance", "perceptual", "divergent")
Level = Literal["bitwise", "tokens", "tolerance", "perceptual", "divergent"]
LEVEL_MEANING = {
    "bitwise": "digests equal",
    "tokens": "discrete outputs (codes / token ids) equal, decoded floats differ",
    "tolerance": "numerically close (relative L2, cosine, SNR, max abs within the thresholds)",
    "perceptual": "audio fingerprints within the Hamming distance",
    "divergent": "none of the above",
}

#: the pair rules (validators): the levels' own words for the rules that test a level,
#: ``composite`` (codes equal + calibrated waveform bounds), ``result_hash`` (the network's
#: text rule: the whole result's sha256) and ``replay`` (each output is what the task's seed
#: samples on the validator's model, near-ties within a calibrated margin: harness.compare.replay).
#: harness.compare.validators implements them.
RULE_NAMES = ("result_hash", "bitwise", "tokens", "tolerance", "perceptual", "composite", "replay")
#: the rules a configuration can pass under, strongest first (replay after composite: it also
#: passes honest pairs whose codes differ, checking each against the task instead)
RULE_STRENGTH = ("bitwise", "composite", "replay", "tokens", "tolerance", "perceptual")
#: the rules a matrix may name as a kind's validator (``[validators.KIND] rule = ...``): every
#: rule that can pass what is not bitwise
NamedRule = Literal["tokens", "tolerance", "perceptual", "composite", "replay"]
NAMED_RULES: tuple[str, ...] = get_args(NamedRule)
#: the classes of an explained divergence (harness.compare.replay.explain_divergence)
DIVERGENCE_CLASSES = ("benign", "suspicious")

#: a configuration's verdict, best first
VERDICTS = ("ready", "ready_with_tolerance", "untested", "not_ready", "failed", "skipped")
Verdict = Literal["ready", "ready_with_tolerance", "not_ready", "failed", "skipped", "untested"]
ACCEPTED = ("ready", "ready_with_tolerance")
VERDICT_TEXT = {
    "ready": "ready (bitwise everywhere tested)",
    "ready_with_tolerance": "ready with tolerance (passes only through the validator the matrix names, whose "
    "measured false accept is <= 1%)",
    "not_ready": "not ready (diverges, is suspicious, or needs a validator the matrix does not name)",
    "failed": "failed (cells crashed or timed out)",
    "skipped": "skipped",
    "untested": "untested (too few executions to compare)",
}

#: a certificate's verdict per configuration (harness certify), and the run verdict it comes from
CERTIFICATE_VERDICTS = ("pass", "pass_with_tolerance", "fail")
CertificateVerdict = Literal["pass", "pass_with_tolerance", "fail"]
CERTIFICATE_PASSED = ("pass", "pass_with_tolerance")
CERTIFICATE_VERDICT: dict[str, CertificateVerdict] = {"ready": "pass", "ready_with_tolerance": "pass_with_tolerance"}


@dataclass(frozen=True)
class Dimension:
    """A comparison between executions that should agree: the cell axis that varies and the
    anchor value every other value is compared against (None: no axis, or the first value)."""

    name: str
    axis: str | None
    anchor: Any
    phrase: str  # "... when <phrase>"


DIMENSIONS: dict[str, Dimension] = {
    d.name: d
    for d in (
        Dimension("repeat", None, None, "the same worker process runs it again"),
        Dimension("process", None, None, "another worker process runs it"),
        Dimension("batch", "batch_size", 1, "it runs inside a batch instead of alone (batch size > 1 vs 1)"),
        Dimension("threads", "threads", None, "the CPU thread count changes"),
        Dimension("isa", "isa", "native", "the CPU kernel set changes (another CPU kind's instruction set)"),
        Dimension("node", None, None, "another node runs it"),
        Dimension("load", "load", "warm", "the model is loaded cold instead of warm"),
        Dimension("device", None, None, "another device runs it"),
    )
}
DimensionName = Literal["repeat", "process", "batch", "threads", "isa", "node", "load"]
#: the dimensions compared within one node's executions of a configuration, in report order
REPRO_DIMENSIONS = ("repeat", "process", "batch", "threads", "isa", "load")
#: compared axis by axis: (dimension, cell axis, anchor value)
AXIS_DIMENSIONS = tuple((d, DIMENSIONS[d].axis, DIMENSIONS[d].anchor) for d in REPRO_DIMENSIONS if DIMENSIONS[d].axis)
#: fleet runs only: each node against the reference node
NODE = "node"
#: the dimensions a verdict judges unless the matrix's gates say otherwise
DEFAULT_JUDGED: tuple[DimensionName, ...] = ("repeat", "process", "batch", "threads", "isa", "node", "load")

#: the honest sources a calibration pairs (harness calibrate): every comparison dimension, plus
#: ``machine`` (an execution of another run or bundle given: another machine, or the same one
#: another day). A calibration entry's scope lists those its bounds cover.
CALIBRATION_SOURCES = ("repeat", "process", "threads", "isa", "batch", "load", "node", "device", "machine")
CalibrationSource = Literal["repeat", "process", "threads", "isa", "batch", "load", "node", "device", "machine"]
