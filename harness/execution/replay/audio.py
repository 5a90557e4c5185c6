"""MusicGen: how its codes are teacher-forced (the delay pattern, one decoder forward with the
doubled CFG batch), the audio stage, and the replayer of the ``audio`` kind.

Why here and not in a kind branch: the ``audio`` KindSpec names ``AUDIO`` (below) as its
replayer; a chain's audio stage is checked by the same ``audio_stage``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from harness.engines.draws import NotReplayable
from harness.execution.replay.checker import Checker, Plan
from harness.execution.replay.stage import Prepared, prepare, run_stage
from harness.execution.replay.start import start_state
from harness.execution.replay.trace import Candidate, Options, ReplayTrace, StageTrace


class AudioTeacher:
    """MusicGen's codes (frames, codebooks) over its delayed steps."""

    def enter(self, model: Any, call: dict[str, Any], hook: Callable[..., Any]) -> None:
        model._sample = hook  # MusicGen's generate calls self._sample(...)
        try:
            model.generate(**call)
        finally:
            del model._sample

    def plan(self, prep: Prepared, codes: np.ndarray) -> tuple[Plan | None, Any, str | None]:
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
        plan = Plan(
            cand=full[:, start:].T.contiguous(),
            valid=valid[:, start:].T.contiguous(),
            fill=torch.full((steps, k_books), -1, dtype=torch.long),
            index=index[:, start:].T.contiguous(),
        )
        return plan, full, None

    def one_pass(self, prep: Prepared, full: Any, checker: Checker) -> None:
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


def decode_codes(model: Any, codes: np.ndarray) -> np.ndarray:
    """The waveform (samples, channels) MusicGen's generate decodes from these codes."""
    import torch

    ids = torch.as_tensor(np.ascontiguousarray(np.asarray(codes).T)[None, None], dtype=torch.long, device=model.device)
    with torch.inference_mode():
        audio = model.audio_encoder.decode(ids, audio_scales=[None]).audio_values
    return np.ascontiguousarray(audio[0].detach().to("cpu", torch.float32).numpy().T)


TEACHER = AudioTeacher()


def audio_stage(
    task: Any, candidate: Candidate, loaded: Any, device: str, state: Any, opts: Options, stage: str = "audio"
) -> StageTrace:
    """One MusicGen stage: its codes replayed, and (when they replay) decoded to the waveform
    the candidate's must be."""
    from harness.engines.musicgen import MusicgenEngine

    eng = MusicgenEngine()
    model = loaded.objects["model"]
    if int(getattr(model.decoder.config, "audio_channels", 1)) != 1:
        raise NotReplayable("stereo MusicGen is not replayed (the harness records one channel's codes)")
    if "codes" not in candidate.arrays:
        return StageTrace(stage=stage, path="none", problem="the candidate sent no codes")
    inputs, _, _ = eng._inputs(loaded, [task], device)
    kwargs, added = eng.call_kwargs(loaded, task, inputs)
    prep = prepare(TEACHER, model, {**inputs, **kwargs, **added})
    trace, _ = run_stage(stage, TEACHER, prep, np.asarray(candidate.arrays["codes"]), state, opts)
    if trace.problem is None:
        began = time.perf_counter()
        trace.decoded = decode_codes(model, np.asarray(candidate.arrays["codes"]))
        trace.seconds["decode"] = time.perf_counter() - began
    return trace


def audio_support(task: Any) -> str | None:
    """Why this MusicGen task cannot be replayed (None: it may be)."""
    if getattr(task, "audio_prompt", None) is not None:
        return "audio-prompted continuation is not replayed (the prompt's codes come from the audio encoder)"
    return None


class AudioReplayer:
    """A MusicGen kind: one stage, its codes teacher-forced, its waveform their decoding."""

    stages = (("audio", "codes"),)

    def support(self, task: Any, device: str) -> str | None:
        return audio_support(task)

    def replay(self, kind: str, task: Any, candidate: Candidate, device: str, cache: Any, opts: Options) -> ReplayTrace:
        from harness.engines.base import get_engine

        loaded, _ = cache.get(get_engine(kind), task, device)
        state = start_state(kind, task, device, opts.start)
        return ReplayTrace(
            kind=kind, start=opts.start, stages=[audio_stage(task, candidate, loaded, device, state, opts)]
        )


AUDIO = AudioReplayer()
