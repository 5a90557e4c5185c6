"""MusicGen text-to-audio, as a network node runs it, with the EnCodec codes captured.

The call is the one ``transformers.TextToAudioPipeline`` makes (tokenizer -> generate), done
directly so that batches with padding and audio prompts can be built and un-batched with
``padding_mask``. Generation kwargs are exactly the network runner's (audio-task
``run_task``): the task's non-null ``generation_config`` fields and nothing else, so the
model's own generation config decides every field the task leaves out (the tiny model and
musicgen-small both sample by default). On top of them the pipeline adds its defaults for
fields that neither the task nor the model's generation config sets (``max_new_tokens``
256, the tokenizer's ``pad_token_id``); :func:`pipeline_additions` adds the same.
MusicGen's ``generate`` returns decoded audio only, so the codes are captured around
``audio_encoder.decode``: the waveform alone hides where a divergence began.

When the seed is applied is the caller's choice (``run(..., seeded=True)`` means "already
seeded before this model was loaded", a node's first task): loading MusicGen draws from
X, so it changes what a sampled task gives.

The three ways of the transformers MusicGen guide:
  - unconditional: ``model.get_unconditional_inputs(num_samples=...)``; its
    ``guidance_scale=1.0`` holds unless the task's generation_config sets one;
  - text-conditional: ``processor(text=..., padding=True)``;
  - audio-prompted continuation: ``processor(text=..., audio=..., sampling_rate=...)``; the
    output (waveform and codes) starts with the prompt itself, and a padded batch is
    un-padded with ``processor.batch_decode(audio, padding_mask=...)`` (the target's padding
    frames are dropped from its codes as well). ``meta["audio_prompt_sha256"]`` digests the
    float32 mono samples the processor received, so a wav_path and a base64 of the same
    sound give the same digest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from harness.engines.base import LoadedModel, Stopwatch
from harness.models.loading import (
    count_quantized,
    load_kwargs,
    load_pretrained,
    read_config,
    resolve_dtype,
    resolve_model,
)
from harness.outputs import Output
from harness.spec.tasks import AudioTask

if TYPE_CHECKING:  # torch and transformers are imported where they are used
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# TextToAudioPipeline's own defaults (transformers 5.x ``_default_generation_config``), added
# only for fields neither the call nor the model's generation config sets.
PIPELINE_DEFAULT_MAX_NEW_TOKENS = 256


def generation_kwargs(task: AudioTask) -> dict[str, Any]:
    """The runner's ``generate_kwargs``: the task's non-null generation fields, nothing invented."""
    return task.generation_config.model_dump(exclude_none=True) if task.generation_config else {}


def pipeline_additions(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """What ``Pipeline._prepare_generate_kwargs`` adds to a call's kwargs (transformers 5.2x):
    its defaults for the parameters that neither the call nor the model's generation config set;
    a default ``max_new_tokens`` never overrides a set ``max_length``."""
    already = {**model.generation_config.to_diff_dict(), **kwargs}
    defaults: dict[str, Any] = {"max_new_tokens": PIPELINE_DEFAULT_MAX_NEW_TOKENS}
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None:
        defaults["pad_token_id"] = pad
    return {
        k: v
        for k, v in defaults.items()
        if k not in already and not (k == "max_new_tokens" and "max_length" in already)
    }


class _CodeRecorder:
    """Wraps ``audio_encoder.decode`` to keep the codes it decodes and time the decode."""

    def __init__(self, audio_encoder: Any, watch: Stopwatch) -> None:
        # audio_encoder: an EncodecModel (or the model class the config names), typed
        # PreTrainedModel | Any by transformers; its decode is replaced on the instance
        self.audio_encoder = audio_encoder
        self.original: Callable[..., Any] = audio_encoder.decode
        self.watch = watch
        self.calls: list[npt.NDArray[np.int64]] = []

    def __enter__(self) -> _CodeRecorder:
        def decode(audio_codes: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self.calls.append(audio_codes.detach().to("cpu").numpy().astype(np.int64))
            with self.watch.section("decode_s"):
                return self.original(audio_codes, *args, **kwargs)

        self.audio_encoder.decode = decode
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.audio_encoder.decode = self.original
        return False


class MusicgenEngine:
    kind = "audio"

    def load(self, task: AudioTask, device: str) -> LoadedModel:
        from transformers import AutoModelForTextToWaveform, AutoProcessor

        resolved = resolve_model(task.model)
        config = read_config(resolved.path)
        dtype = resolve_dtype(task.dtype, config)
        kwargs = load_kwargs(dtype, task.quantize_bits, device)
        model = load_pretrained(AutoModelForTextToWaveform, resolved.path, **kwargs)
        if task.quantize_bits is None:
            model = model.to(device)
        model.eval()
        processor = AutoProcessor.from_pretrained(resolved.path, local_files_only=True)
        meta = {
            "model_path_source": resolved.source,
            "weights_sha256": resolved.weights_sha256,
            "resolved_dtype": dtype,
            "quantization": count_quantized(model, task.quantize_bits).as_dict(),
            "sampling_rate": int(model.config.audio_encoder.sampling_rate),
        }
        return LoadedModel(
            key=(task.model, task.dtype, task.quantize_bits, device),
            objects={"model": model, "processor": processor},
            meta=meta,
        )

    def _inputs(
        self, loaded: LoadedModel, batch: Sequence[AudioTask], device: str
    ) -> tuple[dict[str, Any], torch.Tensor | None, npt.NDArray[np.float32] | None]:
        """Processor inputs for the batch, the padding mask (audio prompts) and the target's
        prompt audio (float32 mono at the model's rate, or None)."""
        model, processor = loaded.objects["model"], loaded.objects["processor"]
        if all(t.unconditional for t in batch):
            return dict(model.get_unconditional_inputs(num_samples=len(batch))), None, None
        if any(t.unconditional for t in batch):
            raise ValueError("unconditional and conditional tasks cannot share a batch")
        from harness.engines.audio_io import load_audio_prompt

        rate = loaded.meta["sampling_rate"]
        texts = [t.prompt for t in batch]
        audios = [load_audio_prompt(t.audio_prompt, rate) for t in batch if t.audio_prompt is not None]
        if audios and len(audios) != len(batch):
            raise ValueError("audio-prompted and text-only tasks cannot share a batch")
        if audios:
            inputs = processor(text=texts, audio=audios, sampling_rate=rate, padding=True, return_tensors="pt")
        else:
            inputs = processor(text=texts, padding=True, return_tensors="pt")
        padding_mask = inputs.get("padding_mask")
        inputs = {k: v.to(device) for k, v in inputs.items()}
        if "input_values" in inputs:
            inputs["input_values"] = inputs["input_values"].to(loaded.objects["model"].dtype)
        return inputs, padding_mask, (audios[0] if audios else None)

    def call_kwargs(
        self, loaded: LoadedModel, task: AudioTask, inputs: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The ``generate`` kwargs of ``task`` (its own fields, then the pipeline's additions);
        an unconditional call's ``guidance_scale`` moves from ``inputs`` into them. Shared with
        harness.execution.replay, which must make exactly this call."""
        model, processor = loaded.objects["model"], loaded.objects["processor"]
        kwargs = generation_kwargs(task)
        if task.unconditional:
            # get_unconditional_inputs() carries guidance_scale=1.0 (the guide's unconditional call);
            # it holds unless the task itself sets guidance_scale.
            explicit = task.generation_config.guidance_scale if task.generation_config else None
            kwargs["guidance_scale"] = inputs.pop("guidance_scale") if explicit is None else explicit
            inputs.pop("guidance_scale", None)
        return kwargs, pipeline_additions(model, processor.tokenizer, kwargs)

    def run(
        self,
        loaded: LoadedModel,
        task: AudioTask,
        device: str,
        neighbours: Sequence[AudioTask] = (),
        seeded: bool = False,
    ) -> Output:
        import torch

        from harness.determinism import seed_everything

        model, processor = loaded.objects["model"], loaded.objects["processor"]
        batch = [task, *neighbours]
        watch = Stopwatch(device)
        with watch.section("encode_s"):
            inputs, padding_mask, prompt_audio = self._inputs(loaded, batch, device)
        kwargs, added = self.call_kwargs(loaded, task, inputs)
        if not seeded:
            seed_everything(task.seed)
        with _CodeRecorder(model.audio_encoder, watch) as recorder, torch.inference_mode():
            with watch.section("generate_s"):
                audio_values = model.generate(**inputs, **kwargs, **added)
        watch.times["generate_s"] -= watch.times.get("decode_s", 0.0)
        audio_values = audio_values.detach().to("cpu", torch.float32)  # numpy has no bfloat16
        if padding_mask is not None:  # the guide's post-processing: strip each row's padding
            audio_list = processor.batch_decode(audio_values, padding_mask=padding_mask)
            wave = np.asarray(audio_list[0], dtype=np.float32)
        else:
            wave = audio_values[0].numpy()
        waveform = np.ascontiguousarray(wave.T.astype(np.float32))  # (samples, channels)
        arrays: dict[str, npt.NDArray[Any]] = {"waveform": waveform}
        meta: dict[str, Any] = {"generation_kwargs": kwargs, "batch_size": len(batch)}
        if added:
            meta["pipeline_added_kwargs"] = added
        prompt_frames = 0
        if recorder.calls:
            codes = recorder.calls[-1]  # (1, batch, codebooks, frames) for mono models
            codes = np.ascontiguousarray(codes[0, 0].T) if codes.ndim == 4 else codes[0]  # (frames, codebooks)
            if prompt_audio is not None:
                frame_rate = float(model.config.audio_encoder.frame_rate)
                prompt_frames = int(np.ceil(prompt_audio.shape[-1] * frame_rate / loaded.meta["sampling_rate"]))
                padded_samples = padding_mask.shape[-1] if padding_mask is not None else prompt_audio.shape[-1]
                padded_frames = int(np.ceil(padded_samples * frame_rate / loaded.meta["sampling_rate"]))
                # the target's own prompt frames, then what was generated (padding frames dropped,
                # as batch_decode drops the padded samples)
                codes = np.ascontiguousarray(np.concatenate([codes[:prompt_frames], codes[padded_frames:]]))
            arrays["codes"] = codes
            meta["new_tokens"] = int(codes.shape[0]) - prompt_frames
        else:
            meta["new_tokens"] = None
        if prompt_audio is not None:
            from harness.digests import digest_array

            # canonical identity of the prompt sound: the same samples digest the same whether
            # they came as a wav_path or as base64
            meta["audio_prompt_sha256"] = digest_array(np.ascontiguousarray(prompt_audio, dtype=np.float32))
            meta["audio_prompt_frames"] = prompt_frames
            meta["audio_prompt_seconds"] = round(prompt_audio.shape[-1] / loaded.meta["sampling_rate"], 6)
        return Output(
            kind="audio",
            arrays=arrays,
            sampling_rate=loaded.meta["sampling_rate"],
            discrete="codes" if "codes" in arrays else None,
            steps="codes" if "codes" in arrays else None,
            timings=watch.times,
            meta=meta,
        )


def neighbours(task: AudioTask, batch_size: int) -> list[AudioTask]:
    """Batch neighbours of a MusicGen task: another text; an unconditional task's neighbours
    are copies of it (there is no text to vary); an audio-prompted task's neighbours keep its
    audio prompt with another text."""
    from harness.engines.base import neighbour_prompts

    if task.unconditional:
        return [task for _ in neighbour_prompts(batch_size)]
    return [task.model_copy(update={"prompt": prompt}) for prompt in neighbour_prompts(batch_size)]
