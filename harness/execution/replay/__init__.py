"""Replay a candidate's discrete output through the reference model, with the seed's draws.

Why: across hardware an honest node's codes or token ids may differ from another honest
node's (float reduction order flips a near-tie, and from there the sequences part). No rule
that compares two outputs can tell that from a node that sent other music. Replay does not
compare outputs: it checks one output against the task. The candidate's tokens are
teacher-forced through the validator's own copy of the model, the task's generation call is
prepared exactly as a node prepares it (the engines' own inputs and kwargs, then transformers'
own ``generate`` preparation: text encoder, classifier-free guidance's doubled batch, the delay
pattern, the logits processors), and at every step the draws the seed gives are regenerated
(harness.engines.draws). At each position the candidate's token must be the one the validator
samples; where it is not, the *gap* says how far the seed's draw was from the boundary between
the two tokens under the validator's distribution (in logit units: ``(U_v - log E_v) - (U_c -
log E_c)`` with ``U`` the processed scores before top-k/top-p filtering, plus how far below
the kept set a filtered candidate token lay). An honest flip has a gap at the scale of float
noise; a replaced token has a gap at the scale of the distribution. Deciding (the calibrated
margin, the decoder bounds) is harness.compare.replay's; this module only measures.

Two ways to get the per-step logits:
  - ``one-pass``: one teacher-forced forward over the whole sequence (GPT: prompt + tokens;
    MusicGen: one decoder forward over the full delayed code sequence with the CFG doubled
    batch, the text encoder once); the logits then differ from ``generate``'s incremental,
    cached ones by float noise (tests/execution/test_replay.py measures it);
  - ``stepwise``: forced generation: transformers' own sampling loop runs with a processor
    that records each step's logits and forces the candidate's token (the draws are consumed as
    in ``generate``): exactly ``generate``'s arithmetic on this machine, at generation's cost.
``auto`` is one-pass (stepwise where the one pass does not reproduce generate's logits:
bitsandbytes 8-bit), re-checked stepwise when a flip's gap falls in a band around the margin
(``recheck_band``), so no decision near the margin rests on the one-pass approximation.

Where the generator starts: ``warm`` (seeded just before generating: a node serving from its
model cache) or ``cold`` (seeded before loading the model: a node's first task; loading
MusicGen draws from the generator, harness.execution.execute). Both are honest; the caller
tries both. Audio: the candidate's waveform must also be the decoding of its codes; this module
decodes them and reports the metrics (``waveform``); text: the response must be the one the
runner builds from the token ids (exactly).

The package, one job per module: ``trace`` (the candidate, options and what a replay finds),
``checker`` (one step's arithmetic), ``stage`` (one stage's call prepared and its logits
checked), ``start`` (warm and cold generator states), the per-kind replayers ``audio``,
``text`` and ``chain`` (each KindSpec names its own: harness.spec.kinds), ``output`` (replay
here) and ``job`` (replay as a worker job of the executors, for another kernel level or
thread count).
"""

from __future__ import annotations

from harness.execution.replay.audio import decode_codes
from harness.execution.replay.checker import gap_between
from harness.execution.replay.job import replay_elsewhere
from harness.execution.replay.output import replay_output, replay_support
from harness.execution.replay.start import cold_differs, start_state
from harness.execution.replay.trace import PATHS, Candidate, Flip, Options, ReplayTrace, StageTrace, StepDetail

__all__ = [
    "PATHS",
    "Candidate",
    "Flip",
    "Options",
    "ReplayTrace",
    "StageTrace",
    "StepDetail",
    "cold_differs",
    "decode_codes",
    "gap_between",
    "replay_elsewhere",
    "replay_output",
    "replay_support",
    "start_state",
]
