"""Text -> LLM -> music: the PaddleMIX music-generation chain, as two engine calls.

Stage 1 (text) is a GPT task: ``task.text_stage`` with its messages replaced by one user
message, ``task.prompt_template.format(description=task.description)`` (a system message of
``text_stage`` is kept, first), run by the text engine exactly as a GPT task is run. Stage 2
(audio) is ``task.audio_stage`` (MusicGen or AudioLDM) with its ``prompt`` replaced by the
text stage's first choice. When that choice is empty (the model stopped at once) the
description itself is the audio prompt, so the audio stage never runs on an empty prompt;
``response["audio_prompt"]`` always says which prompt was used.

What is compared: ``arrays`` hold ``text_token_ids`` (stage 1), ``codes`` (MusicGen) or
``latents`` (AudioLDM), and ``waveform`` (stage 2). The ``output`` digest is the canonical
response JSON, and the response carries the waveform's digest (``waveform_sha256``), so one
digest covers both stages. ``discrete`` is ``codes`` for a MusicGen chain (no discrete
output for AudioLDM); ``meta["stages"]`` digests each stage on its own, and
:func:`harness.compare.chain.attribute_stage` says in which stage two runs parted.

A chain runs alone: its audio prompt is known only after its text stage, so it has no batch
neighbours (:func:`neighbours` refuses ``batch_size > 1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.digests import digest_array, digest_json
from harness.engines.base import LoadedModel, ModelKey
from harness.outputs import Output
from harness.spec.kinds import Engine
from harness.spec.tasks import AudioLDMTask, AudioTask, ChainTask, GPTTask, TaskError, parse_task, task_to_doc


def text_stage_task(task: ChainTask) -> GPTTask:
    """The GPT task stage 1 runs: the template filled with the description, after any system message."""
    try:
        content = task.prompt_template.format(description=task.description)
    except (KeyError, IndexError, ValueError) as err:
        raise TaskError(
            f"$.prompt_template: cannot be filled ({type(err).__name__}: {err}); write literal braces as {{{{ and }}}}"
        ) from None
    doc = task_to_doc(task.text_stage)
    system = [m for m in doc["messages"] if m["role"] == "system"][:1]
    doc["messages"] = [*system, {"role": "user", "content": content}]
    try:
        built = parse_task(doc, "gpt")
    except TaskError as err:
        raise TaskError(
            "\n".join(f"$.text_stage (as run): {line.removeprefix('$.')}" for line in str(err).splitlines())
        ) from None
    assert isinstance(built, GPTTask)
    return built


def audio_stage_task(task: ChainTask, prompt: str) -> AudioTask | AudioLDMTask:
    """The audio stage with the text stage's answer (or the description) as its prompt."""
    stage = task.audio_stage
    if isinstance(stage, AudioTask) and stage.unconditional:
        raise TaskError(
            "$.audio_stage.unconditional: a chain's audio stage is conditioned on the text stage; "
            "unconditional generation is a plain audio task"
        )
    return stage.model_copy(update={"prompt": prompt})


def _audio_engine(stage: AudioTask | AudioLDMTask) -> Engine:
    if isinstance(stage, AudioLDMTask):
        from harness.engines.audioldm import AudioLDMEngine

        return AudioLDMEngine()
    from harness.engines.musicgen import MusicgenEngine

    return MusicgenEngine()


def _combined_quantization(text: dict[str, Any] | None, audio: dict[str, Any] | None) -> dict[str, Any]:
    """Both stages' bitsandbytes reports, summed, with each stage's own report kept."""
    text, audio = text or {}, audio or {}
    return {
        "bits": audio.get("bits") or text.get("bits"),
        "backend": audio.get("backend") or text.get("backend"),
        "quantized_layers": int(text.get("quantized_layers", 0)) + int(audio.get("quantized_layers", 0)),
        "linear_layers": int(text.get("linear_layers", 0)) + int(audio.get("linear_layers", 0)),
        "stages": {"text": text, "audio": audio},
    }


class ChainEngine:
    kind = "chain"

    def load(self, task: ChainTask, device: str) -> LoadedModel:
        from harness.engines.textgen import TextgenEngine

        text_task = text_stage_task(task)
        audio_engine = _audio_engine(task.audio_stage)
        text = TextgenEngine().load(text_task, device)
        # refuses what it cannot run (e.g. AudioLDM 8-bit on CPU)
        audio: LoadedModel = audio_engine.load(task.audio_stage, device)
        meta = {
            "stages": {"text": text.meta, "audio": {**audio.meta, "engine": audio_engine.kind}},
            "resolved_dtype": audio.meta.get("resolved_dtype"),
            "quantization": _combined_quantization(text.meta.get("quantization"), audio.meta.get("quantization")),
            "sampling_rate": audio.meta.get("sampling_rate"),
        }
        return LoadedModel(key=("ChainTask", text.key, audio.key), objects={"text": text, "audio": audio}, meta=meta)

    def run(
        self, loaded: LoadedModel, task: ChainTask, device: str, neighbours: Sequence[Any] = (), seeded: bool = False
    ) -> Output:
        """``seeded`` applies to the text stage (the first to generate); the audio stage seeds
        again before its own generation, as a second task on a loaded node would."""
        from harness.engines.textgen import TextgenEngine

        if neighbours:
            raise ValueError("a chain task runs alone (batch_size 1): its audio prompt depends on its own text stage")
        text_task = text_stage_task(task)
        text_out = TextgenEngine().run(loaded.objects["text"], text_task, device, seeded=seeded)
        if text_out.response is None:  # the text engine always answers with the runner's response
            raise RuntimeError("the text stage gave no response")
        answer = text_out.response["choices"][0]["message"]["content"] if text_out.response["choices"] else ""
        prompt = answer if answer.strip() else task.description
        audio_task = audio_stage_task(task, prompt)
        audio_engine = _audio_engine(audio_task)
        audio_out = audio_engine.run(loaded.objects["audio"], audio_task, device)

        arrays = {"text_token_ids": text_out.arrays["token_ids"]}
        for name in ("codes", "latents", "waveform"):
            if name in audio_out.arrays:
                arrays[name] = audio_out.arrays[name]
        waveform_sha = digest_array(arrays["waveform"])
        response = {"text_stage": text_out.response, "audio_prompt": prompt, "waveform_sha256": waveform_sha}
        timings: dict[str, float] = {}
        for stage, out in (("text", text_out), ("audio", audio_out)):
            for key, value in out.timings.items():
                timings[key] = timings.get(key, 0.0) + value
                timings[f"{stage}_{key}"] = value
        audio_meta = {
            k: v
            for k, v in audio_out.meta.items()
            if k in ("generation_kwargs", "new_tokens", "timesteps", "latent_shape", "audio_prompt_sha256")
        }
        stages = {
            "text": {
                "digest": digest_json(text_out.response),
                "tokens": digest_array(text_out.arrays["token_ids"]),
                "generation_kwargs": text_out.meta.get("generation_kwargs"),
                "new_tokens": text_out.meta.get("new_tokens"),
            },
            "audio": {
                "engine": audio_engine.kind,
                "digest": waveform_sha,
                "tokens": digest_array(arrays["codes"]) if "codes" in arrays else None,
                "latents": digest_array(arrays["latents"]) if "latents" in arrays else None,
                **audio_meta,
            },
        }
        discrete = "codes" if "codes" in arrays else None
        meta: dict[str, Any] = {
            "stages": stages,
            "batch_size": 1,
            "audio_prompt_from": "text_stage" if prompt == answer else "description",
            "new_tokens": None,
        }
        if "audio_prompt_sha256" in audio_out.meta:
            meta["audio_prompt_sha256"] = audio_out.meta["audio_prompt_sha256"]
        return Output(
            kind="chain",
            arrays=arrays,
            response=response,
            sampling_rate=audio_out.sampling_rate,
            discrete=discrete,
            steps=discrete or ("latents" if "latents" in arrays else None),
            timings=timings,
            meta=meta,
        )


def neighbours(task: ChainTask, batch_size: int) -> list[ChainTask]:
    """A chain has no batch neighbours: its audio prompt exists only after its own text stage."""
    if batch_size > 1:
        raise ValueError(
            f"batch_size {batch_size} is not supported for chain tasks: the audio stage's prompt is the "
            f"text stage's answer, so a chain runs alone (use batch_size 1)"
        )
    return []


def model_key(task: ChainTask, device: str) -> ModelKey:
    """A chain holds two models: its key is both stages' keys."""
    from harness.engines.base import model_key as stage_key

    return ("ChainTask", stage_key(task.text_stage, device), stage_key(task.audio_stage, device))
