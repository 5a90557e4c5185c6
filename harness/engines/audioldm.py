"""AudioLDM text-to-audio (diffusers), as the PaddleMIX music-generation seed runs it.

The call is the seed's: ``pipe(prompt, negative_prompt, num_inference_steps,
audio_length_in_s, generator=Generator().manual_seed(seed))``, on diffusers'
``AudioLDMPipeline`` (deprecated since diffusers 0.33.1 but still shipped and working).
The waveform alone hides where two nodes parted, so the latents after every denoising step
are captured with the pipeline's legacy ``callback`` (it has no ``callback_on_step_end``);
they are the un-doubled latents (after the classifier-free-guidance combination and the
scheduler step), of which the target's first waveform (batch row 0) is kept.

Quantization: diffusers' bitsandbytes backend refuses to run without a GPU
(``validate_environment``: "No GPU found"), so on CPU ``quantize_bits`` raises
``UnsupportedConfiguration`` rather than silently running unquantized. On CUDA only the
UNet is quantized (diffusers ``BitsAndBytesConfig`` via ``PipelineQuantizationConfig``);
a load that quantizes no layer is refused as well.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from harness.engines.base import LoadedModel, Stopwatch
from harness.models.loading import (
    UnsupportedConfiguration,
    count_quantized,
    load_pretrained,
    resolve_dtype,
    resolve_model,
    safetensors_only,
    torch_dtype,
)
from harness.outputs import Output
from harness.spec.tasks import AudioLDMTask

if TYPE_CHECKING:  # torch and diffusers are imported where they are used (diffusers is read as Any)
    import torch
    from diffusers import PipelineQuantizationConfig

# Fields every task in one batch must share: the pipeline takes them once per call.
SHARED_FIELDS = ("num_inference_steps", "audio_length_in_s", "guidance_scale", "num_waveforms_per_prompt")


class _PipelineConfig:
    """What ``resolve_dtype`` reads: a diffusers folder has no transformers config, so the
    dtype is looked for in model_index.json, then the UNet's and the text encoder's configs."""

    def __init__(self, path: str) -> None:
        self.dtype: str | None = None
        for rel in ("model_index.json", "unet/config.json", "text_encoder/config.json"):
            f = Path(path) / rel
            if not f.exists():
                continue
            data = json.loads(f.read_text())
            value = data.get("dtype") or data.get("torch_dtype")
            if isinstance(value, str) and value.replace("torch.", "") in ("float16", "bfloat16", "float32"):
                self.dtype = value.replace("torch.", "")
                break


def _quantization(bits: int | None, dtype: str, device: str) -> PipelineQuantizationConfig | None:
    """diffusers' PipelineQuantizationConfig quantizing the UNet, or refuse clearly."""
    if bits is None:
        return None
    if not device.startswith("cuda"):
        raise UnsupportedConfiguration(
            f"{bits}-bit AudioLDM on {device}: diffusers' bitsandbytes backend needs a GPU "
            "(it raises 'No GPU found'); not running unquantized instead"
        )
    import torch

    if not torch.cuda.is_available():
        raise UnsupportedConfiguration(f"{bits}-bit on {device}: CUDA is not available")
    try:
        import bitsandbytes  # noqa: F401
        from diffusers import BitsAndBytesConfig, PipelineQuantizationConfig
    except ImportError as err:
        raise UnsupportedConfiguration(
            f"{bits}-bit AudioLDM needs bitsandbytes and diffusers' quantizers ({err})"
        ) from None
    if bits == 8:
        cfg = BitsAndBytesConfig(load_in_8bit=True)
    else:
        cfg = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dtype(dtype)
        )
    return PipelineQuantizationConfig(quant_mapping={"unet": cfg})


class _Timed:
    """Time (and optionally record) calls to a pipeline method by shadowing it on the instance."""

    def __init__(self, pipe: Any, names: Sequence[str], watch: Stopwatch, section: str) -> None:
        # pipe: a diffusers pipeline (diffusers is read as Any)
        self.pipe, self.names, self.watch, self.section = pipe, tuple(names), watch, section

    def __enter__(self) -> _Timed:
        for name in self.names:
            original = getattr(self.pipe, name)

            def timed(*args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
                with self.watch.section(self.section):
                    return _original(*args, **kwargs)

            object.__setattr__(self.pipe, name, timed)  # plain attribute: not a pipeline component
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        for name in self.names:
            self.pipe.__dict__.pop(name, None)
        return False


class AudioLDMEngine:
    kind = "audioldm"

    def load(self, task: AudioLDMTask, device: str) -> LoadedModel:
        import torch
        from diffusers import AudioLDMPipeline

        resolved = resolve_model(task.model)
        dtype = resolve_dtype(task.dtype, _PipelineConfig(resolved.path))
        kwargs: dict[str, Any] = {
            "dtype": torch_dtype(dtype),  # diffusers 0.42: torch_dtype is deprecated
            "local_files_only": True,
            "use_safetensors": True if safetensors_only() else None,
        }
        qc = _quantization(task.quantize_bits, dtype, device)
        if qc is not None:
            kwargs["quantization_config"] = qc
        try:
            pipe = load_pretrained(AudioLDMPipeline, resolved.path, **kwargs)
        except RuntimeError as err:
            if qc is not None and "GPU" in str(err):
                raise UnsupportedConfiguration(f"{task.quantize_bits}-bit AudioLDM: {err}") from None
            raise
        if qc is None:
            pipe = pipe.to(device)
        else:  # the quantized UNet is placed by its loader; move the rest
            for name in ("text_encoder", "vae", "vocoder"):
                getattr(pipe, name).to(device)
        pipe.set_progress_bar_config(disable=True)
        report = count_quantized(pipe.unet, task.quantize_bits)
        if task.quantize_bits is not None and report.quantized_layers == 0:
            raise UnsupportedConfiguration(
                f"{task.quantize_bits}-bit AudioLDM: bitsandbytes quantized no UNet layer; refusing to run unquantized"
            )
        for module in (pipe.text_encoder, pipe.unet, pipe.vae, pipe.vocoder):
            module.eval()
        meta = {
            "model_path_source": resolved.source,
            "weights_sha256": resolved.weights_sha256,
            "resolved_dtype": dtype,
            "quantization": report.as_dict(),
            "sampling_rate": int(pipe.vocoder.config.sampling_rate),
            "scheduler": type(pipe.scheduler).__name__,
            "torch_version": torch.__version__,
        }
        return LoadedModel(
            key=(task.model, task.dtype, task.quantize_bits, device), objects={"pipeline": pipe}, meta=meta
        )

    def run(
        self,
        loaded: LoadedModel,
        task: AudioLDMTask,
        device: str,
        neighbours: Sequence[AudioLDMTask] = (),
        seeded: bool = False,
    ) -> Output:
        import torch

        from harness.determinism import seed_everything

        pipe = loaded.objects["pipeline"]
        batch = [task, *neighbours]
        for other in neighbours:
            for name in SHARED_FIELDS:
                if getattr(other, name) != getattr(task, name):
                    raise ValueError(
                        f"AudioLDM tasks in one batch must share {name} "
                        f"({getattr(task, name)!r} != {getattr(other, name)!r})"
                    )
        prompts = [t.prompt for t in batch]
        # the pipeline wants one type for prompt and negative_prompt; "" is what it uses for None
        negatives = [t.negative_prompt or "" for t in batch] if any(t.negative_prompt for t in batch) else None
        kwargs: dict[str, Any] = {name: getattr(task, name) for name in SHARED_FIELDS}
        kwargs["eta"] = 0.0

        latents: list[npt.NDArray[np.float32]] = []
        timesteps: list[int] = []

        def on_step(step: int, timestep: torch.Tensor, step_latents: torch.Tensor) -> None:
            # un-doubled latents after the scheduler step: (batch * waveforms, C, H, W)
            latents.append(step_latents[0].detach().to("cpu", torch.float32).numpy())
            timesteps.append(int(timestep))

        watch = Stopwatch(device)
        if not seeded:
            seed_everything(task.seed)
        generator = torch.Generator(device).manual_seed(
            task.seed
        )  # the seed's own generator: load order cannot move it
        with (
            _Timed(pipe, ["_encode_prompt"], watch, "encode_s"),
            _Timed(pipe, ["decode_latents", "mel_spectrogram_to_waveform"], watch, "decode_s"),
            torch.inference_mode(),
            watch.section("generate_s"),
        ):
            result = pipe(
                prompt=prompts,
                negative_prompt=negatives,
                generator=generator,
                callback=on_step,
                callback_steps=1,
                output_type="np",
                **kwargs,
            )
        watch.times.setdefault("encode_s", 0.0)
        watch.times.setdefault("decode_s", 0.0)
        watch.times["generate_s"] -= watch.times["encode_s"] + watch.times["decode_s"]

        audios = np.asarray(result.audios)  # (batch * waveforms, samples), float32
        waveform = np.ascontiguousarray(audios[0].astype(np.float32).reshape(-1, 1))  # (samples, 1)
        arrays = {"waveform": waveform}
        if latents:
            arrays["latents"] = np.ascontiguousarray(np.stack(latents).astype(np.float32))
        meta_kwargs = dict(kwargs, negative_prompt=task.negative_prompt)
        return Output(
            kind="audioldm",
            arrays=arrays,
            sampling_rate=loaded.meta["sampling_rate"],
            discrete=None,
            steps="latents" if "latents" in arrays else None,
            timings=watch.times,
            meta={
                "generation_kwargs": meta_kwargs,
                "batch_size": len(batch),
                "timesteps": timesteps,
                "latent_shape": list(arrays["latents"].shape[1:]) if "latents" in arrays else None,
                "requested_samples": int(task.audio_length_in_s * loaded.meta["sampling_rate"]),
            },
        )


def neighbours(task: AudioLDMTask, batch_size: int) -> list[AudioLDMTask]:
    """Batch neighbours of an AudioLDM task: another prompt (steps, length, guidance and
    negative prompt are shared by one pipeline call)."""
    from harness.engines.base import neighbour_prompts

    return [task.model_copy(update={"prompt": prompt}) for prompt in neighbour_prompts(batch_size)]
