"""The one spelling of the harness's concepts: comparison levels, pair rules, verdicts, record
statuses, matrix axes and comparison dimensions, with their order, meaning, colours, short names
and defaults.

Why one leaf module: these names travel through every stage (matrix policy, comparison,
analysis, reports, certificates). Spelt in several places, a new one (a dimension such as
``isa``) had to be found in each, and the lists drifted: the summary judged a shorter default
set of dimensions than the gates did. Every other module imports them from here, renderers
included: tests/test_vocabulary.py fails on a second spelling of a list, a mapping's keys or a
meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

#: comparison levels between two outputs, strongest first (docs/deciding.md)
LEVELS = ("bitwise", "tokens", "tolerance", "perceptual", "divergent")
Level = Literal["bitwise", "tokens", "tolerance", "perceptual", "divergent"]
#: the one wording of each level, in every renderer (the verdict map's legend, JUnit, the pytest
#: plugin's failure); docs/deciding.md explains each at length
LEVEL_MEANING = {
    "bitwise": "identical bytes",
    "tokens": "same tokens/codes, floats differ",
    "tolerance": "within numeric tolerance",
    "perceptual": "same audio fingerprint only",
    "divergent": "outputs diverge",
}
#: what a pair at each level differs in (the levels read the other way); ``{step}`` is where the
#: discrete outputs began to differ, when known
LEVEL_DIFFERED = {
    "tokens": "the decoded floats; the discrete outputs (codes / token ids) are equal",
    "tolerance": "the discrete outputs; the floats stay within the numeric tolerance",
    "perceptual": "the discrete outputs and the floats beyond tolerance; the audio fingerprints still match",
    "divergent": "the discrete outputs (codes / token ids){step}, beyond every tolerance",
}
#: the verdict map's cells: a level, or a state where no pair gives one
MAP_STATES = ("failed", "untested")
MAP_LEVELS = (*LEVELS, *MAP_STATES)
MAP_MEANING = {**LEVEL_MEANING, "failed": "cells failed", "untested": "nothing to compare"}
#: the verdict map's fills: colour-blind-safe (ColorBrewer RdYlBu, 5 classes) plus purple for
#: failed and grey for untested; the light fills take dark text (DARK_TEXT), the others white
LEVEL_COLOUR = {
    "bitwise": "#2c7bb6",
    "tokens": "#abd9e9",
    "tolerance": "#ffffbf",
    "perceptual": "#fdae61",
    "divergent": "#d7191c",
    "failed": "#542788",
    "untested": "#d9d9d9",
}
DARK_TEXT = frozenset({"tokens", "tolerance", "perceptual", "untested"})

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
#: a verdict's name in tables and badges, and its style in the terminal (rich)
VERDICT_SHORT = {
    "ready": "ready",
    "ready_with_tolerance": "ready with tolerance",
    "not_ready": "not ready",
    "failed": "failed",
    "skipped": "skipped",
    "untested": "untested",
}
VERDICT_STYLE = {
    "ready": "bold blue",
    "ready_with_tolerance": "bold yellow",
    "not_ready": "bold red",
    "failed": "bold magenta",
    "skipped": "dim",
    "untested": "dim",
}

#: the verdict map's words abbreviated for a narrow screen (the HTML report shows both)
ABBREVIATION = {
    "bitwise": "bit",
    "tokens": "tok",
    "tolerance": "tol",
    "perceptual": "perc",
    "divergent": "div",
    "failed": "fail",
    "untested": "n/a",
    "skipped": "skip",
    "sensitive": "sens",
    "no effect": "none",
    "reference": "ref",
    "repeat": "rep",
    "process": "proc",
    "threads": "thr",
    "ready with tolerance": "tol.",
    "not ready": "NOT",
}

#: an execution's record status (harness.store.records), and the ones that mean it did not finish
STATUSES = ("ok", "failed", "timeout", "skipped")
Status = Literal["ok", "failed", "timeout", "skipped"]
FAILED_STATUSES = ("failed", "timeout")

#: the axes a matrix may vary (harness.spec.matrix), and the ones that make a configuration: the
#: cells of one configuration differ only in the others (seed, threads, batch, load, kernels,
#: worker, repeat), which the comparison dimensions compare
AXIS_NAMES = (
    "dtype",
    "quantize_bits",
    "seed",
    "device",
    "threads",
    "batch_size",
    "profile",
    "load",
    "isa",
    "tf32",
    "stack",
)
CONFIG_AXES = ("dtype", "quantize_bits", "device", "profile", "tf32")

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
    #: what a one-task matrix sets to compare it (harness.assert_reproducible's ``across``); ""
    #: for a dimension one machine cannot compare (node, device)
    reproduced_by: str = ""
    #: a pair is a comparison only when its two sides ran other kernel classes (read back in
    #: each record's ``determinism.kernels``); a pair of one kernel class is set aside as
    #: ``SAME_KERNELS``: untested, never agreement
    other_kernels: bool = False


#: the stack every other is compared with: the interpreter and packages the harness runs in
CURRENT_STACK = "current"

DIMENSIONS: dict[str, Dimension] = {
    d.name: d
    for d in (
        Dimension("repeat", None, None, "the same worker process runs it again", "repeats 2 in one worker"),
        Dimension("process", None, None, "another worker process runs it", "2 worker processes"),
        Dimension(
            "batch",
            "batch_size",
            1,
            "it runs inside a batch instead of alone (batch size > 1 vs 1)",
            "batch sizes 1 and 2",
        ),
        Dimension("threads", "threads", None, "the CPU thread count changes", "threads 1 and 2"),
        Dimension(
            "isa",
            "isa",
            "native",
            "the CPU kernel set changes (another CPU kind's instruction set)",
            "native and the next narrower CPU kernels (below-native)",
            other_kernels=True,
        ),
        Dimension("node", None, None, "another node runs it"),
        Dimension("load", "load", "warm", "the model is loaded cold instead of warm", "cold and warm model loads"),
        Dimension("device", None, None, "another device runs it"),
        Dimension("stack", "stack", CURRENT_STACK, "another software stack runs it (other library versions)"),
    )
}
DimensionName = Literal["repeat", "process", "batch", "threads", "isa", "node", "load", "stack"]
#: the dimensions compared within one node's executions of a configuration, in report order
REPRO_DIMENSIONS = ("repeat", "process", "batch", "threads", "isa", "load", "stack")
#: compared axis by axis: (dimension, cell axis, anchor value)
AXIS_DIMENSIONS = tuple((d, DIMENSIONS[d].axis, DIMENSIONS[d].anchor) for d in REPRO_DIMENSIONS if DIMENSIONS[d].axis)
#: fleet runs only: each node against the reference node
NODE = "node"
#: why a pair of a dimension that compares kernel sets is no comparison: both sides ran native's
#: kernel class (an ``isa`` level that is native's own on this machine, e.g. avx2 on an AVX2-only CPU)
SAME_KERNELS = "same kernels as native here: not a comparison"
#: the dimensions a verdict judges unless the matrix's gates say otherwise (``stack`` only when
#: the gates name it: an upgrade that changes outputs is a finding to report, not always a defect)
DEFAULT_JUDGED: tuple[DimensionName, ...] = ("repeat", "process", "batch", "threads", "isa", "node", "load")

#: the honest sources a calibration pairs (harness calibrate): every comparison dimension, plus
#: ``machine`` (an execution of another run or bundle given: another machine, or the same one
#: another day). A calibration entry's scope lists those its bounds cover.
CALIBRATION_SOURCES = ("repeat", "process", "threads", "isa", "batch", "load", "node", "device", "stack", "machine")
CalibrationSource = Literal[
    "repeat", "process", "threads", "isa", "batch", "load", "node", "device", "stack", "machine"
]
