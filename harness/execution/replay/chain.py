"""A chain (text, then music from the text's answer): its text stage replayed, then its audio
stage from the answer that stage gave, with the chain's own links checked.

Why its own replayer: the stages, the start of each (the audio stage is seeded warm after the
text stage) and the links between them (the audio prompt is the answer, the waveform digest)
are the chain kind's facts; the ``chain`` KindSpec names ``CHAIN`` (below).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.execution.replay.audio import audio_stage, audio_support
from harness.execution.replay.start import start_state
from harness.execution.replay.text import text_stage
from harness.execution.replay.trace import Candidate, Options, ReplayTrace


class ChainReplayer:
    """Text stage, then audio stage; the audio stage is checked only when the text one holds."""

    stages = (("text", "text_token_ids"), ("audio", "codes"))

    def support(self, task: Any, device: str) -> str | None:
        from harness.spec.tasks import AudioLDMTask

        if isinstance(task.audio_stage, AudioLDMTask):
            return "a chain with an AudioLDM stage: its audio stage has no token to check"
        return audio_support(task.audio_stage)

    def replay(self, kind: str, task: Any, candidate: Candidate, device: str, cache: Any, opts: Options) -> ReplayTrace:
        from harness.digests import digest_array
        from harness.engines.base import get_engine
        from harness.engines.chain import audio_stage_task, text_stage_task

        loaded, _ = cache.get(get_engine(kind), task, device)
        response = candidate.response or {}
        text_task = text_stage_task(task)
        state = start_state(kind, task, device, opts.start)
        text = text_stage(
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
            return ReplayTrace(kind=kind, start=opts.start, stages=stages)
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
        audio = audio_stage(
            audio_task,
            candidate,
            loaded.objects["audio"],
            device,
            start_state(kind, audio_task, device, "warm"),  # warm: the seed alone, whatever the kind
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
        return ReplayTrace(kind=kind, start=opts.start, stages=stages)


CHAIN = ChainReplayer()
