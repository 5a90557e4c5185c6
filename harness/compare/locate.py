"""Locate a divergence to the first module (layer or operation) whose output differs.

Why: the comparison levels say *at which generation step* two executions part; an engineer
then asks *where in the network* it began (a matmul reduction order in one projection, a
quantized layer, a kernel that is not deterministic). Here both cells are re-executed, each
once, with forward hooks on every module of the loaded model; at the step of interest every
module output is digested (sha256 of its bytes) and kept, in the order the hooks fire (a
child finishes before its parent, so the first differing entry is the innermost, earliest
operation). The first (module, call) whose digests differ is named with its max-abs and
rel-L2 difference.

Soundness: hooks only read; they are removed afterwards (``Hooks`` is a context manager), and
each re-run's output digest must equal the recorded one -- a divergence that does not
reproduce in the re-run (e.g. it only happened in another process) cannot be located, and
the location is refused as unsound rather than guessed.

Steps: the stepping module's forward calls are counted (MusicGen's decoder, GPT-2's language
model, AudioLDM's UNet): call k is generation step k (step 0 holds the prompt). Modules that
run outside the steps (the text encoder before, the EnCodec decoder or VAE/vocoder after) are
always recorded, with step ``OUTSIDE``; the trace is in firing order, so the first difference
is the earliest in time (a thread-count difference usually starts in the text encoder). The engines are not changed:
hooks are registered from outside on the objects ``harness.engines.base.ModelCache`` holds.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from harness.execution.hooks import STEPPING, Hooks, LocateError, Trace

__all__ = ["STEPPING", "Hooks", "LocateError", "Location", "Trace", "first_difference", "operation_hint"]


class Location(BaseModel):
    step: int  # -1: outside the generation steps (encoder before, decoder after)
    module: str | None  # "name#call[.output]" of the first differing output; None: all equal
    max_abs: float | None = None
    rel_l2: float | None = None
    compared: int = 0  # module outputs compared before (and including) the first difference
    shape: list[int] | None = None
    note: str = ""


def first_difference(a: Trace, b: Trace) -> Location:
    """The first module output (in firing order) whose digest differs between two traces."""
    from harness.compare.levels import float_metrics

    seen_b = {(key, step): (d, arr) for key, d, arr, step in b.entries}
    for i, (key, digest, arr, step) in enumerate(a.entries, start=1):
        other = seen_b.get((key, step))
        if other is None:
            return Location(step=step, module=key, compared=i, note="no such output on the other side")
        if other[0] != digest:
            if arr.shape != other[1].shape:
                return Location(
                    step=step,
                    module=key,
                    compared=i,
                    shape=list(arr.shape),
                    note=f"shapes differ: {list(arr.shape)} vs {list(other[1].shape)}",
                )
            m = float_metrics(arr.reshape(-1).astype(np.float64), other[1].reshape(-1).astype(np.float64))
            return Location(
                step=step, module=key, max_abs=m["max_abs"], rel_l2=m["rel_l2"], compared=i, shape=list(arr.shape)
            )
    return Location(
        step=a.step, module=None, compared=len(a.entries), note="every module output is identical at this step"
    )


def operation_hint(module: str | None) -> str:
    """What kind of operation the module is, for the sentence a person reads."""
    if not module:
        return ""
    leaf = module.split("#")[0].rsplit(".", 1)[-1]
    if leaf in ("q", "k", "v", "o", "wi", "wo", "wi_0", "wi_1"):  # T5's projections
        return "matmul reduction order"
    for keys, what in (
        (
            (
                "q_proj",
                "k_proj",
                "v_proj",
                "out_proj",
                "fc1",
                "fc2",
                "c_attn",
                "c_proj",
                "c_fc",
                "lm_head",
                "proj",
                "linear",
                "dense",
            ),
            "matmul reduction order",
        ),
        (
            ("layer_norm", "ln_1", "ln_2", "ln_f", "norm", "self_attn_layer_norm", "final_layer_norm"),
            "normalisation reduction",
        ),
        (("conv", "conv1d", "conv2d"), "convolution"),
        (("embed_tokens", "wte", "wpe"), "embedding lookup"),
    ):
        if any(k in leaf for k in keys):
            return what
    return "operation"
