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
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.engines.draws import (
    Draws,
    NotReplayable,
    decoding_problem,
    device_problem,
    pick,
    sampler_check,
    warm_state,
)

PATHS = ("auto", "one-pass", "stepwise")
#: processors that only filter: they keep a set of tokens unchanged and set the rest to -inf
FILTERS = frozenset(
    {
        "TopKLogitsWarper",
        "TopPLogitsWarper",
        "MinPLogitsWarper",
        "TypicalLogitsWarper",
        "EpsilonLogitsWarper",
        "EtaLogitsWarper",
        "TopHLogitsWarper",
    }
)
#: kinds replay knows
KINDS_REPLAYED = ("audio", "gpt", "chain")


@dataclass
class Candidate:
    """What a node sends: its discrete output and result, nothing else it could make up."""

    arrays: Mapping[str, np.ndarray]  # codes (frames, codebooks) / token_ids (rows, n) / waveform / text_token_ids
    response: dict[str, Any] | None = None


@dataclass(frozen=True)
class Flip:
    """A position whose candidate token is not the one the validator samples."""

    step: int  # generation step
    row: int  # codebook (MusicGen) or returned sequence (text)
    index: int  # frame (MusicGen) or token position (text)
    candidate: int
    sampled: int
    gap: float  # logit units; inf: the candidate's token was impossible


@dataclass
class StepDetail:
    """One step as the validator computed it (kept for explaining a divergence)."""

    step: int
    candidate: np.ndarray  # (rows,)
    sampled: np.ndarray  # (rows,)
    valid: np.ndarray  # (rows,) bool
    scores: np.ndarray  # (rows, V) float64 processed scores before filtering (U)
    kept: np.ndarray  # (rows, V) bool: survives the filters
    log_draws: np.ndarray | None  # (rows, V) float64 log E; None for greedy


@dataclass
class StageTrace:
    stage: str  # "audio" or "text"
    path: str
    steps: int = 0
    positions: int = 0
    flips: list[Flip] = field(default_factory=list)
    problem: str | None = None  # structural: shape, length, token range, result not built from the tokens
    decoded: np.ndarray | None = None  # audio: the validator's decoding of the candidate's codes
    closest: float | None = None  # smallest slack of a matched position: how near an honest flip came
    seconds: dict[str, float] = field(default_factory=dict)
    details: dict[int, StepDetail] = field(default_factory=dict)
    greedy: bool = False

    @property
    def max_gap(self) -> float:
        return max((f.gap for f in self.flips), default=0.0)

    def summary(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "path": self.path,
            "steps": self.steps,
            "positions": self.positions,
            "flips": len(self.flips),
            "max_gap": _finite_or_none(self.max_gap) if self.flips else 0.0,
            "first_flip": _flip_dict(self.flips[0]) if self.flips else None,
            "worst_flip": _flip_dict(max(self.flips, key=lambda f: f.gap)) if self.flips else None,
            "problem": self.problem,
            "closest": self.closest,
            "seconds": {k: round(v, 6) for k, v in self.seconds.items()},
        }


@dataclass
class ReplayTrace:
    kind: str
    start: str
    stages: list[StageTrace]

    @property
    def max_gap(self) -> float:
        return max((s.max_gap for s in self.stages), default=0.0)

    @property
    def problem(self) -> str | None:
        return next((f"{s.stage}: {s.problem}" for s in self.stages if s.problem), None)

    def summary(self) -> dict[str, Any]:
        return {"kind": self.kind, "start": self.start, "stages": [s.summary() for s in self.stages]}


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _flip_dict(f: Flip) -> dict[str, Any]:
    return {
        "step": f.step,
        "row": f.row,
        "index": f.index,
        "candidate": f.candidate,
        "sampled": f.sampled,
        "gap": _finite_or_none(f.gap),
    }


# --- the checker: processors, softmax, draws, pick, gap (one step at a time) -------------------------


@dataclass
class _Plan:
    """Per generation step: the candidate's token per row, whether that row's token is checked
    (kept in the output), and what generate appends where it is not (-1: its own pick)."""

    cand: Any  # (steps, rows) long tensor
    valid: Any  # (steps, rows) bool tensor
    fill: Any  # (steps, rows) long tensor
    index: Any  # (steps, rows) long: the frame / token position of each row's token

    @property
    def steps(self) -> int:
        return int(self.cand.shape[0])


def _apply(processors, ids, scores):
    """``LogitsProcessorList.__call__`` without its per-call signature inspection (a third of
    a replay's time at 512 steps): these processors take (input_ids, scores) only."""
    for processor in processors:
        scores = processor(ids, scores)
    return scores


class _Checker:
    #: steps whose slack (how near a matched position came to another pick) is computed at once
    SLACK_CHUNK = 32

    def __init__(self, processors, plan: _Plan, draws: Draws | None, detail_steps: Sequence[int] = ()):
        self.processors = list(processors)
        self.shapers = [p for p in self.processors if type(p).__name__ not in FILTERS]
        self.plan, self.draws = plan, draws
        self.detail_steps = set(detail_steps)
        self.trace_flips: list[Flip] = []
        self.details: dict[int, StepDetail] = {}
        self.positions = 0
        self.closest = math.inf
        self.t = 0
        self._pending: list[tuple] = []  # (scores, draws, matched rows) awaiting the slack computation

    def step(self, ids, raw):
        """Check step ``self.t`` given the ids so far and the raw next-token logits (float32);
        returns the column ``generate`` appends."""
        import torch

        t = self.t
        cand, valid, fill = self.plan.cand[t], self.plan.valid[t], self.plan.fill[t]
        scores = _apply(self.processors, ids, raw)
        rows, vocab = scores.shape
        if self.draws is not None:
            draws = self.draws.next(rows, vocab)
            picked = pick(torch.softmax(scores, dim=-1), draws)
        else:
            draws, picked = None, torch.argmax(scores, dim=-1)
        self.positions += int(valid.sum())
        wrong = valid & (picked != cand)
        matched = valid & ~wrong
        if vocab > 1 and bool(matched.any()):
            self._pending.append((scores, draws, matched))
            if len(self._pending) >= self.SLACK_CHUNK:
                self._flush()
        if bool(wrong.any()) or t in self.detail_steps:
            log_e = None if draws is None else torch.log(draws.double())
            shaped = _apply(self.shapers, ids, raw).double()
            kept = torch.isfinite(scores)
            for r in torch.nonzero(wrong).flatten().tolist():
                self.trace_flips.append(
                    Flip(
                        step=t,
                        row=r,
                        index=int(self.plan.index[t, r]),
                        candidate=int(cand[r]),
                        sampled=int(picked[r]),
                        gap=_gap(
                            shaped[r], kept[r], log_e[r] if log_e is not None else None, int(picked[r]), int(cand[r])
                        ),
                    )
                )
            if t in self.detail_steps:
                self.details[t] = StepDetail(
                    step=t,
                    candidate=cand.numpy().copy(),
                    sampled=picked.numpy().copy(),
                    valid=valid.numpy().copy(),
                    scores=shaped.numpy(),
                    kept=kept.numpy(),
                    log_draws=None if log_e is None else log_e.numpy(),
                )
        self.t += 1
        if self.t == self.plan.steps:
            self._flush()
        return torch.where(valid, cand, torch.where(fill >= 0, fill, picked))

    def _flush(self) -> None:
        """The closest call among the pending steps' matched positions: the gap between the
        best and the second-best ``score - log E`` (float32 is plenty for a report figure)."""
        import torch

        if not self._pending:
            return
        scores = torch.stack([s for s, _, _ in self._pending])
        z = scores if self._pending[0][1] is None else scores - torch.log(torch.stack([d for _, d, _ in self._pending]))
        top = torch.topk(z, 2, dim=-1).values
        slack = (top[..., 0] - top[..., 1])[torch.stack([m for _, _, m in self._pending])]
        slack = slack[torch.isfinite(slack)]
        if slack.numel():
            self.closest = min(self.closest, float(slack.min()))
        self._pending.clear()


def _gap(shaped, kept, log_e, sampled: int, candidate: int) -> float:
    """How far the draw was from picking ``candidate`` instead of ``sampled`` (logit units)."""
    import torch

    u_c = float(shaped[candidate])
    if not math.isfinite(u_c):
        return math.inf  # suppressed before filtering (min length, bad words): impossible
    z_v = float(shaped[sampled]) - (float(log_e[sampled]) if log_e is not None else 0.0)
    z_c = u_c - (float(log_e[candidate]) if log_e is not None else 0.0)
    gap = max(0.0, z_v - z_c)
    if not bool(kept[candidate]):  # filtered: it had to climb into the kept set first
        lowest_kept = float(torch.min(torch.where(kept, shaped, torch.full_like(shaped, math.inf))))
        gap = max(gap, lowest_kept - u_c)
    return gap


def gap_between(detail: StepDetail, row: int, mine: int, other: int) -> float:
    """Under this side's distribution at this step: how far its draw was from picking ``other``
    instead of ``mine`` (negative: it would rather have picked ``other``)."""
    u, kept = detail.scores[row], detail.kept[row]
    le = detail.log_draws[row] if detail.log_draws is not None else np.zeros_like(u)
    if not np.isfinite(u[other]):
        return math.inf
    if not np.isfinite(u[mine]):
        return -math.inf
    gap = float((u[mine] - le[mine]) - (u[other] - le[other]))
    if not kept[other]:
        gap = max(gap, float(np.min(np.where(kept, u, np.inf))) - float(u[other]))
    if not kept[mine]:
        gap = min(gap, float(u[mine]) - float(np.min(np.where(kept, u, np.inf))))
    return gap


# --- preparing the call exactly as generate does -----------------------------------------------------


class _Stop(Exception):
    pass


@dataclass
class _Prepared:
    model: Any
    input_ids: Any
    processors: Any
    stopping: Any
    gen: Any
    model_kwargs: dict[str, Any]
    run_sample: Any = None  # callable(logits_processor) -> the real sampling loop, with the captured state


def _prepare(kind: str, model, call: dict[str, Any]) -> _Prepared:
    """Run ``model.generate(**call)`` up to the decoding loop and keep what it prepared (the
    text encoder's outputs with CFG's null half, the delay pattern, the processor list)."""
    import torch

    box: dict[str, Any] = {}

    def hook(*args, **kwargs):
        input_ids = args[-1]
        box["prepared"] = _Prepared(
            model=model,
            input_ids=input_ids,
            processors=kwargs.pop("logits_processor"),
            stopping=kwargs.pop("stopping_criteria"),
            gen=kwargs.pop("generation_config"),
            model_kwargs=kwargs,
        )
        raise _Stop

    with torch.inference_mode():
        try:
            if kind == "audio":  # MusicGen's generate calls self._sample(...)
                model._sample = hook
                try:
                    model.generate(**call)
                finally:
                    del model._sample
            else:  # GenerationMixin.generate calls a callable custom_generate(self, input_ids, ...)
                model.generate(**call, custom_generate=hook)
        except _Stop:
            pass
    if "prepared" not in box:
        raise NotReplayable("generate did not reach its sampling loop (another decoding mode)")
    return box["prepared"]


def _stepwise_logits(prep: _Prepared, checker: _Checker, state) -> None:
    """Forced generation: transformers' own loop, a first processor that hands each step's raw
    logits to the checker and a last one that forces the column the checker returns."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    column: dict[str, Any] = {}

    class Record(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if checker.t < checker.plan.steps:
                column["next"] = checker.step(input_ids, scores)
            return scores

    class Force(LogitsProcessor):
        def __call__(self, input_ids, scores):
            forced = torch.full_like(scores, -math.inf)
            nxt = column.pop("next", None)
            if nxt is None:  # past the candidate's end: generate would go on; stop here
                raise _Stop
            forced.scatter_(1, nxt[:, None].to(scores.device), 0.0)
            return forced

    processors = LogitsProcessorList([Record(), *prep.processors, Force()])
    sample = type(prep.model)._sample
    kwargs = dict(prep.model_kwargs)
    with torch.inference_mode(), torch.random.fork_rng(devices=[]):
        torch.set_rng_state(state)
        with contextlib.suppress(_Stop):
            sample(
                prep.model,
                prep.input_ids,
                logits_processor=processors,
                stopping_criteria=prep.stopping,
                generation_config=prep.gen,
                **kwargs,
            )


# --- MusicGen ---------------------------------------------------------------------------------------


def _audio_plan(prep: _Prepared, codes: np.ndarray) -> tuple[_Plan | None, Any, str | None]:
    """(plan, the full delayed sequence, problem) for candidate codes (frames, codebooks)."""
    import torch

    mask = prep.model_kwargs["decoder_delay_pattern_mask"].to("cpu")  # (K, T): -1 where generated
    k_books, total = mask.shape
    valid = mask == -1
    frames = int(valid[0].sum())
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != k_books:
        return None, None, f"codes have shape {list(codes.shape)}, expected (frames, {k_books})"
    if codes.shape[0] != frames:
        return None, None, f"{codes.shape[0]} frames where the task generates {frames}"
    vocab = int(prep.model.decoder.config.vocab_size)
    if codes.size and (codes.min() < 0 or codes.max() >= vocab):
        return None, None, f"a code outside 0..{vocab - 1}"
    full = mask.clone()
    index = torch.full_like(mask, -1)
    for k in range(k_books):
        cols = torch.nonzero(valid[k]).flatten()
        if cols.numel() != frames:
            return None, None, "the delay pattern gives codebooks unequal frame counts"
        full[k, cols] = torch.as_tensor(codes[:, k], dtype=full.dtype)
        index[k, cols] = torch.arange(frames)
    steps = total - prep.input_ids.shape[1]
    start = prep.input_ids.shape[1]
    plan = _Plan(
        cand=full[:, start:].T.contiguous(),
        valid=valid[:, start:].T.contiguous(),
        fill=torch.full((steps, k_books), -1, dtype=torch.long),
        index=index[:, start:].T.contiguous(),
    )
    return plan, full, None


def _audio_one_pass(prep: _Prepared, full, checker: _Checker) -> None:
    import torch

    model, mk = prep.model, prep.model_kwargs
    start = prep.input_ids.shape[1]
    dec = full[:, :-1].to(prep.input_ids.device)
    if mk.get("guidance_scale") is not None and mk["guidance_scale"] > 1:
        dec = dec.repeat((2, 1))
    with torch.inference_mode():
        out = model(
            encoder_outputs=mk["encoder_outputs"],
            attention_mask=mk.get("attention_mask"),
            decoder_input_ids=dec,
            use_cache=False,
            return_dict=True,
        )
        logits = out.logits
        ids = full[:, :start].to(prep.input_ids.device)
        for t in range(checker.plan.steps):
            col = checker.step(ids, logits[:, start - 1 + t].to(dtype=torch.float32))
            ids = torch.cat([ids, col[:, None]], dim=-1)


def decode_codes(model, codes: np.ndarray) -> np.ndarray:
    """The waveform (samples, channels) MusicGen's generate decodes from these codes."""
    import torch

    ids = torch.as_tensor(np.ascontiguousarray(np.asarray(codes).T)[None, None], dtype=torch.long, device=model.device)
    with torch.inference_mode():
        audio = model.audio_encoder.decode(ids, audio_scales=[None]).audio_values
    return np.ascontiguousarray(audio[0].detach().to("cpu", torch.float32).numpy().T)


# --- text --------------------------------------------------------------------------------------------


def _text_plan(prep: _Prepared, token_ids: np.ndarray) -> tuple[_Plan | None, Any, str | None]:
    import torch

    rows = int(prep.input_ids.shape[0])
    prompt = int(prep.input_ids.shape[1])
    max_new = int(prep.gen.max_length) - prompt
    eos = _eos_set(prep.gen)
    pad = int(prep.gen._pad_token_tensor) if prep.gen._pad_token_tensor is not None else next(iter(eos), 0)
    vocab = int(prep.model.config.vocab_size)
    tok = np.asarray(token_ids)
    if tok.ndim != 2 or tok.shape[0] != rows:
        return None, None, f"token ids have shape {list(tok.shape)}, expected ({rows}, new tokens)"
    width = 0
    lengths = []
    for r, row in enumerate(tok):
        n = int(np.argmax(row < 0)) if (row < 0).any() else len(row)
        if (row[n:] >= 0).any():
            return None, None, f"row {r}: token ids after its padding"
        ids = row[:n]
        if n == 0:
            return None, None, f"row {r}: no token at all (generate gives each row one at least)"
        if ((ids < 0) | (ids >= vocab)).any():
            return None, None, f"row {r}: a token id outside 0..{vocab - 1}"
        stops = [i for i, x in enumerate(ids.tolist()) if x in eos]
        if stops and stops[0] != n - 1:
            return None, None, f"row {r}: tokens after its end of sequence"
        lengths.append((n, bool(stops)))
        width = max(width, n)
    if width > max_new:
        return None, None, f"{width} new tokens where the task allows {max_new}"
    for r, (n, ended) in enumerate(lengths):
        if not ended and not (n == width == max_new):
            return (
                None,
                None,
                (
                    f"row {r} stops after {n} tokens without an end of sequence (the task generates up "
                    f"to {max_new}): truncated"
                ),
            )
    cand = torch.full((width, rows), pad, dtype=torch.long)
    valid = torch.zeros((width, rows), dtype=torch.bool)
    for r, (n, _) in enumerate(lengths):
        cand[:n, r] = torch.as_tensor(tok[r, :n], dtype=torch.long)
        valid[:n, r] = True
    plan = _Plan(
        cand=cand,
        valid=valid,
        fill=torch.full((width, rows), pad, dtype=torch.long),
        index=torch.arange(width)[:, None].expand(width, rows).contiguous(),
    )
    return plan, cand.T.contiguous(), None


def _eos_set(gen) -> set[int]:
    eos = getattr(gen, "_eos_token_tensor", None)
    if eos is None:
        eos = gen.eos_token_id
    if eos is None:
        return set()
    if hasattr(eos, "tolist"):
        eos = eos.tolist()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def _text_one_pass(prep: _Prepared, tokens, checker: _Checker) -> None:
    import torch

    model, mk = prep.model, prep.model_kwargs
    prompt = prep.input_ids
    device = prompt.device
    width = checker.plan.steps
    full = torch.cat([prompt, tokens[:, : width - 1].to(device)], dim=-1) if width > 1 else prompt
    mask = mk.get("attention_mask")
    if mask is not None:
        mask = torch.cat(
            [mask, torch.ones((mask.shape[0], full.shape[1] - mask.shape[1]), dtype=mask.dtype, device=device)], dim=-1
        )
        positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    else:
        positions = torch.arange(full.shape[1], device=device)[None].expand(full.shape[0], -1)
    with torch.inference_mode():
        logits = model(
            input_ids=full, attention_mask=mask, position_ids=positions, use_cache=False, return_dict=True
        ).logits
        ids = prompt
        p = prompt.shape[1]
        for t in range(width):
            col = checker.step(ids, logits[:, p - 1 + t].to(dtype=torch.float32))
            ids = torch.cat([ids, col[:, None]], dim=-1)


# --- one stage ---------------------------------------------------------------------------------------


def one_pass_problem(prep: _Prepared) -> str | None:
    """Why one teacher-forced pass does not give generate's logits for this model (None: it
    does, within float noise). Measured (tests/execution/test_replay.py): bitsandbytes 8-bit
    decomposes outlier columns over all the rows of a matmul's input, so a pass over the whole
    sequence quantizes each token otherwise than one token at a time (scores off by 0.12 where
    float32 noise is 6e-6); 4-bit (weights only, float32 compute) is not affected."""
    config = getattr(prep.model, "config", None)
    quant = getattr(config, "quantization_config", None)
    if quant is not None and getattr(quant, "load_in_8bit", False):
        return "bitsandbytes 8-bit quantizes a matmul's activations over all its rows: forced generation instead"
    return None


@dataclass
class Options:
    start: str = "warm"
    path: str = "auto"
    rows_in_draw_factor: int = 1  # the batch size the candidate ran in (its rows come first)
    detail_steps: tuple[int, ...] = ()
    #: auto: when a one-pass flip's gap falls in this band (around the margin, where the one
    #: pass's own float noise could decide), the stage is re-checked with forced generation
    recheck_band: tuple[float, float] | None = None
    allow_greedy: bool = False  # explain_divergence only: greedy steps, gaps without draws


def _run_stage(
    stage: str, kind: str, prep: _Prepared, discrete: np.ndarray, state, opts: Options
) -> tuple[StageTrace, Any]:
    """Check one stage's discrete output against the prepared call; (trace, the full token
    matrix the plan built: MusicGen's delayed sequence, the text rows padded as generate pads)."""
    watch: dict[str, float] = {}
    problem = decoding_problem(prep.gen)
    greedy = not getattr(prep.gen, "do_sample", False)
    if problem and not (greedy and opts.allow_greedy and problem.startswith("greedy")):
        raise NotReplayable(problem)
    started = time.perf_counter()
    plan, full, bad = (_audio_plan if kind == "audio" else _text_plan)(prep, discrete)
    if bad:
        return StageTrace(stage=stage, path="none", problem=bad, greedy=greedy), None
    rows = int(plan.cand.shape[1])
    per_task_rows = rows
    factor = max(1, int(opts.rows_in_draw_factor))

    def checker() -> _Checker:
        draws = None if greedy else Draws(state, rows_in_draw=per_task_rows * factor)
        return _Checker(prep.processors, plan, draws, opts.detail_steps)

    path = "one-pass" if opts.path == "one-pass" or (opts.path == "auto" and not one_pass_problem(prep)) else "stepwise"
    chk = checker()
    if path == "one-pass":
        (_audio_one_pass if kind == "audio" else _text_one_pass)(prep, full, chk)
    else:
        _stepwise_logits(prep, chk, state)
    watch[path] = time.perf_counter() - started
    band = opts.recheck_band
    if (
        opts.path == "auto"
        and path == "one-pass"
        and band is not None
        and any(band[0] < f.gap <= band[1] for f in chk.trace_flips)
    ):
        again = time.perf_counter()
        chk = checker()
        _stepwise_logits(prep, chk, state)
        path = "stepwise (re-check)"
        watch["stepwise"] = time.perf_counter() - again
    if chk.t < plan.steps:
        return StageTrace(
            stage=stage,
            path=path,
            steps=chk.t,
            positions=chk.positions,
            flips=chk.trace_flips,
            problem=f"generation stopped after {chk.t} of the candidate's {plan.steps} steps",
            seconds=watch,
            greedy=greedy,
        ), full
    return StageTrace(
        stage=stage,
        path=path,
        steps=plan.steps,
        positions=chk.positions,
        flips=chk.trace_flips,
        closest=None if math.isinf(chk.closest) else chk.closest,
        seconds=watch,
        details=chk.details,
        greedy=greedy,
    ), full


# --- start states ---------------------------------------------------------------------------------------

_COLD: dict[tuple, Any] = {}


def start_state(kind: str, task: Any, device: str, start: str):
    """The CPU generator's state when sampling begins, for a node that started ``start``."""
    import torch

    from harness.execution.execute import task_seed

    seed = task_seed(task)
    if start == "warm":
        return warm_state(seed)
    if start != "cold":
        raise ValueError(f"unknown start {start!r}; expected warm or cold")
    from harness.engines.base import cache_key, get_engine

    key = (kind, cache_key(task, device), seed)
    if key not in _COLD:
        from harness.determinism import seed_everything

        with torch.random.fork_rng(devices=[]):
            seed_everything(seed)
            get_engine(kind).load(task, device)  # a node's first task: seed, then load (draws for MusicGen)
            _COLD[key] = torch.get_rng_state()
        while len(_COLD) > 64:
            _COLD.pop(next(iter(_COLD)))
    return _COLD[key]


def cold_differs(kind: str, task: Any, device: str) -> bool:
    """Whether loading this task's model draws from the generator (so cold != warm)."""
    import torch

    return not torch.equal(start_state(kind, task, device, "cold"), start_state(kind, task, device, "warm"))


# --- the kinds ------------------------------------------------------------------------------------------


def replay_support(kind: str, task: Any, device: str = "cpu") -> str | None:
    """Why this task cannot be replayed, before any model is loaded (None: it may be)."""
    from harness.spec.tasks import AudioLDMTask, AudioTask, ChainTask

    if kind not in KINDS_REPLAYED:
        return f"replay covers {', '.join(KINDS_REPLAYED)} tasks, not {kind} (a diffusion model has no token to check)"
    why = device_problem(device)
    if why:
        return why
    if isinstance(task, ChainTask):
        if isinstance(task.audio_stage, AudioLDMTask):
            return "a chain with an AudioLDM stage: its audio stage has no token to check"
        return replay_support("gpt", task.text_stage, device) or replay_support("audio", task.audio_stage, device)
    if isinstance(task, AudioTask) and task.audio_prompt is not None:
        return "audio-prompted continuation is not replayed (the prompt's codes come from the audio encoder)"
    return None


def _audio_stage(
    task, candidate: Candidate, loaded, device: str, state, opts: Options, stage: str = "audio"
) -> StageTrace:
    from harness.engines.musicgen import MusicgenEngine

    eng = MusicgenEngine()
    model = loaded.objects["model"]
    if int(getattr(model.decoder.config, "audio_channels", 1)) != 1:
        raise NotReplayable("stereo MusicGen is not replayed (the harness records one channel's codes)")
    if "codes" not in candidate.arrays:
        return StageTrace(stage=stage, path="none", problem="the candidate sent no codes")
    inputs, _, _ = eng._inputs(loaded, [task], device)
    kwargs, added = eng.call_kwargs(loaded, task, inputs)
    prep = _prepare("audio", model, {**inputs, **kwargs, **added})
    trace, _ = _run_stage(stage, "audio", prep, np.asarray(candidate.arrays["codes"]), state, opts)
    if trace.problem is None:
        began = time.perf_counter()
        trace.decoded = decode_codes(model, np.asarray(candidate.arrays["codes"]))
        trace.seconds["decode"] = time.perf_counter() - began
    return trace


def _text_stage(
    task,
    token_ids: np.ndarray | None,
    response: dict | None,
    loaded,
    device: str,
    state,
    opts: Options,
    stage: str = "text",
) -> StageTrace:
    from harness.digests import digest_json
    from harness.engines.textgen import TextgenEngine, resolved_generation_config, runner_response

    if token_ids is None:
        return StageTrace(stage=stage, path="none", problem="the candidate sent no token ids")
    eng = TextgenEngine()
    model, tokenizer = loaded.objects["model"], loaded.objects["tokenizer"]
    enc = eng.encode(loaded, [task], device)
    gen, kwargs = resolved_generation_config(model, task)
    if kwargs.get("stop_strings"):
        raise NotReplayable("stop strings are not replayed (the network's runner fails such tasks)")
    prep = _prepare("gpt", model, {**enc, "generation_config": gen})
    trace, rows = _run_stage(stage, "gpt", prep, np.asarray(token_ids), state, opts)
    if trace.problem is None:
        built = runner_response(
            task.model, tokenizer, rows.numpy().astype(np.int64), int(enc["attention_mask"][0].sum())
        )
        if response is None:
            trace.problem = "the candidate sent no response"
        elif digest_json(built) != digest_json(response):
            trace.problem = "the response is not the one the runner builds from these token ids"
    return trace


def replay_output(
    kind: str, task: Any, candidate: Candidate, *, device: str = "cpu", cache=None, options: Options | None = None
) -> ReplayTrace:
    """Replay ``candidate`` against ``task`` on this machine (the validator's own model copy)."""
    from harness.engines.base import ModelCache, get_engine
    from harness.spec.tasks import ChainTask

    opts = options or Options()
    why = replay_support(kind, task, device)
    if why:
        raise NotReplayable(why)
    sampler_check()
    cache = cache if cache is not None else ModelCache()
    if kind == "audio":
        loaded, _ = cache.get(get_engine("audio"), task, device)
        state = start_state("audio", task, device, opts.start)
        return ReplayTrace(
            kind=kind, start=opts.start, stages=[_audio_stage(task, candidate, loaded, device, state, opts)]
        )
    if kind == "gpt":
        loaded, _ = cache.get(get_engine("gpt"), task, device)
        state = start_state("gpt", task, device, opts.start)
        return ReplayTrace(
            kind=kind,
            start=opts.start,
            stages=[
                _text_stage(task, candidate.arrays.get("token_ids"), candidate.response, loaded, device, state, opts)
            ],
        )
    assert isinstance(task, ChainTask)
    return _replay_chain(task, candidate, device, cache, opts)


def _replay_chain(task, candidate: Candidate, device: str, cache, opts: Options) -> ReplayTrace:
    from harness.digests import digest_array
    from harness.engines.base import get_engine
    from harness.engines.chain import audio_stage_task, text_stage_task

    loaded, _ = cache.get(get_engine("chain"), task, device)
    response = candidate.response or {}
    text_task = text_stage_task(task)
    state = start_state("chain", task, device, opts.start)
    text = _text_stage(
        text_task,
        candidate.arrays.get("text_token_ids"),
        response.get("text_stage"),
        loaded.objects["text"],
        device,
        state,
        opts,
    )
    stages = [text]
    if text.problem:
        return ReplayTrace(kind="chain", start=opts.start, stages=stages)
    choices = response["text_stage"].get("choices") or []
    answer = choices[0]["message"]["content"] if choices else ""
    prompt = answer if answer.strip() else task.description
    audio_task = audio_stage_task(task, prompt)
    audio_opts = Options(
        start="warm",
        path=opts.path,
        detail_steps=opts.detail_steps,
        recheck_band=opts.recheck_band,
        allow_greedy=opts.allow_greedy,
    )
    audio = _audio_stage(
        audio_task,
        candidate,
        loaded.objects["audio"],
        device,
        start_state("audio", audio_task, device, "warm"),
        audio_opts,
    )
    if audio.problem is None and response.get("audio_prompt") != prompt:
        audio.problem = "the response's audio_prompt is not the text stage's answer"
    if (
        audio.problem is None
        and "waveform" in candidate.arrays
        and response.get("waveform_sha256") != digest_array(np.asarray(candidate.arrays["waveform"]))
    ):
        audio.problem = "the response's waveform_sha256 is not the waveform's digest"
    stages.append(audio)
    return ReplayTrace(kind="chain", start=opts.start, stages=stages)


# --- in another CPU kernel set: a fresh process with the level's caps set before torch starts ----------


def replay_elsewhere(
    kind: str,
    task_doc: dict[str, Any],
    candidate: Candidate,
    *,
    isa: str = "native",
    threads: int | None = None,
    options: Options | None = None,
    timeout: float = 600,
) -> dict[str, Any]:
    """``replay_output`` in a fresh worker at CPU kernel level ``isa`` (and ``threads``):
    ``{"trace": summary | None, "not_replayable": reason | None, "details": {(stage, step):
    StepDetail}}``."""
    import os
    import subprocess
    import tempfile

    from harness.hubenv import apply_library_env
    from harness.isa import child_environment

    opts = options or Options()
    with tempfile.TemporaryDirectory(prefix="harness-replay-") as tmp:
        folder = Path(tmp)
        np.savez(folder / "candidate.npz", **{k: np.asarray(v) for k, v in candidate.arrays.items()})
        job = {
            "kind": kind,
            "task": task_doc,
            "response": candidate.response,
            "threads": threads,
            "options": {
                "start": opts.start,
                "path": opts.path,
                "rows_in_draw_factor": opts.rows_in_draw_factor,
                "detail_steps": list(opts.detail_steps),
                "recheck_band": opts.recheck_band,
                "allow_greedy": opts.allow_greedy,
            },
        }
        (folder / "job.json").write_text(json.dumps(job))
        env = dict(os.environ)
        apply_library_env(env)
        env.update(child_environment(isa))
        proc = subprocess.run(
            [sys.executable, "-m", "harness.execution.replay", str(folder)],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise RuntimeError(f"replay worker (isa {isa}) exited with code {proc.returncode}: {tail}")
        out = json.loads((folder / "trace.json").read_text())
        with np.load(folder / "details.npz", allow_pickle=False) as npz:
            out["details"] = {}
            for name in npz.files:
                if name.startswith("scores_"):
                    _, stage, step = name.split("_")
                    key = f"{stage}_{step}"
                    out["details"][(stage, int(step))] = StepDetail(
                        step=int(step),
                        candidate=npz[f"candidate_{key}"],
                        sampled=npz[f"sampled_{key}"],
                        valid=npz[f"valid_{key}"],
                        scores=npz[name],
                        kept=npz[f"kept_{key}"],
                        log_draws=npz[f"logdraws_{key}"] if f"logdraws_{key}" in npz.files else None,
                    )
        return out


def _worker(folder: str) -> int:
    import os

    from harness.determinism import apply_environment
    from harness.isa import LEVEL_VARIABLE, NATIVE

    apply_environment("on", isa=os.environ.get(LEVEL_VARIABLE, NATIVE))  # before torch starts
    import torch

    from harness.spec.tasks import parse_task

    path = Path(folder)
    job = json.loads((path / "job.json").read_text())
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    with np.load(path / "candidate.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    o = job["options"]
    opts = Options(
        start=o["start"],
        path=o["path"],
        rows_in_draw_factor=o["rows_in_draw_factor"],
        detail_steps=tuple(o["detail_steps"]),
        recheck_band=tuple(o["recheck_band"]) if o["recheck_band"] else None,
        allow_greedy=o["allow_greedy"],
    )
    task = parse_task(job["task"], job["kind"])
    result: dict[str, Any] = {}
    details: dict[str, np.ndarray] = {}
    try:
        trace = replay_output(job["kind"], task, Candidate(arrays=arrays, response=job.get("response")), options=opts)
        result = {"trace": trace.summary(), "not_replayable": None}
        for stage in trace.stages:
            for step, d in stage.details.items():
                key = f"{stage.stage}_{step}"
                details.update(
                    {
                        f"candidate_{key}": d.candidate,
                        f"sampled_{key}": d.sampled,
                        f"valid_{key}": d.valid,
                        f"scores_{key}": d.scores,
                        f"kept_{key}": d.kept,
                    }
                )
                if d.log_draws is not None:
                    details[f"logdraws_{key}"] = d.log_draws
    except NotReplayable as err:
        result = {"trace": None, "not_replayable": str(err)}
    (path / "trace.json").write_text(json.dumps(result))
    np.savez(path / "details.npz", **details)
    return 0


if __name__ == "__main__":  # the fresh worker of replay_elsewhere
    if len(sys.argv) == 2:
        sys.exit(_worker(sys.argv[1]))
    print("usage: python -m harness.execution.replay FOLDER (internal; use `harness replay`)", file=sys.stderr)
    sys.exit(2)
