"""Semantic checks a node operator must see before trusting a task.

A task can be schema-valid and still not mean what its author thinks: ``top_p: 0.0`` with
sampling keeps one token (greedy; the seed does nothing), ``temperature: 0`` with sampling is
rejected by transformers, a token budget beyond the model's positions fails mid-run. Each
warning has a stable code, the JSON path of the field, and a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.spec.tasks import AudioLDMTask, AudioTask, ChainTask, GPTTask, Task

AUDIO_DEFAULTS = {"do_sample": True, "top_k": 250, "top_p": 0.0, "temperature": 1.0}


@dataclass(frozen=True)
class LintWarning:
    code: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.code} {self.path}: {self.message}"


def _effective(task: AudioTask | GPTTask) -> dict[str, Any]:
    base: dict[str, Any] = dict(AUDIO_DEFAULTS) if isinstance(task, AudioTask) and task.generation_defaults == "network" else {}
    if task.generation_config is not None:
        base.update(task.generation_config.model_dump(exclude_none=True))
    return base


def _sampling_checks(task: AudioTask | GPTTask, prefix: str) -> list[LintWarning]:
    cfg = _effective(task)
    gc = f"{prefix}generation_config"
    out: list[LintWarning] = []
    sampling = cfg.get("do_sample")
    if sampling is not True:
        why = "do_sample is false" if sampling is False else "do_sample is not set (the model's default decides)"
        if cfg.get("num_beams", 1) > 1:
            why = f"beam search (num_beams={cfg['num_beams']}) without sampling"
        out.append(LintWarning("seed-no-effect", f"{gc}.do_sample", f"{why}: decoding is deterministic and the seed has no effect"))
    else:
        if cfg.get("top_p") == 0.0:
            out.append(LintWarning("seed-no-effect", f"{gc}.top_p", "top_p 0.0 keeps only the most likely token: "
                                   "sampling is effectively greedy and the seed has no effect"))
        if cfg.get("top_k") == 1:
            out.append(LintWarning("seed-no-effect", f"{gc}.top_k", "top_k 1 keeps one token: effectively greedy, the seed has no effect"))
        if cfg.get("temperature") == 0.0:
            out.append(LintWarning("temperature-zero", f"{gc}.temperature", "temperature 0 with do_sample: transformers "
                                   "rejects it (it must be > 0); use do_sample false for greedy decoding"))
    if isinstance(task, GPTTask):
        n = cfg.get("num_return_sequences", 1)
        if n > 1 and sampling is not True and cfg.get("num_beams", 1) < n:
            out.append(LintWarning("return-sequences", f"{gc}.num_return_sequences",
                                   f"{n} sequences need sampling or num_beams >= {n}; transformers will refuse it"))
    return out


def _quant_checks(task, device: str | None, prefix: str) -> list[LintWarning]:
    out: list[LintWarning] = []
    if task.quantize_bits is None:
        return out
    if device and device.startswith("mps"):
        out.append(LintWarning("quantization-device", f"{prefix}quantize_bits",
                               f"{task.quantize_bits}-bit bitsandbytes does not run on {device}"))
    if device == "cpu" and task.quantize_bits == 4:
        out.append(LintWarning("quantization-device", f"{prefix}quantize_bits", "4-bit on the CPU needs every Linear "
                               "input width to be a multiple of 64 (bitsandbytes); other models fail at generation"))
    if isinstance(task, AudioTask) and task.dtype != "auto":
        out.append(LintWarning("dtype-ignored", f"{prefix}dtype", "the network's audio runner drops dtype when "
                               "quantize_bits is set; nodes may compute in another dtype than this harness"))
    return out


def _length_checks(task, limits: dict[str, int] | None, prefix: str) -> list[LintWarning]:
    if not limits or isinstance(task, (AudioLDMTask, ChainTask)):
        return []
    limit = limits.get("max_new_tokens")
    cfg = task.generation_config
    asked = cfg.max_new_tokens if cfg and cfg.max_new_tokens else (256 if isinstance(task, GPTTask) else None)
    if limit and asked and asked > limit:
        return [LintWarning("max-new-tokens", f"{prefix}generation_config.max_new_tokens",
                            f"{asked} new tokens exceed the model's limit of {limit} positions")]
    return []


def model_limits(model_ref: str) -> dict[str, int] | None:
    """The model's token limit when its config is on this machine (None otherwise). Reads
    config.json as plain JSON: linting a matrix must not pay for importing transformers."""
    import json
    from pathlib import Path

    try:
        from harness.models.loading import ModelNotFound, resolve_model

        config = json.loads((Path(resolve_model(model_ref).path) / "config.json").read_text())
    except (ModelNotFound, OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    for cfg in (config.get("decoder"), config):
        if not isinstance(cfg, dict):
            continue
        for key in ("max_position_embeddings", "n_positions"):
            value = cfg.get(key)
            if isinstance(value, int) and value > 0:
                return {"max_new_tokens": value}
    return None


def lint_task(task: Task, device: str | None = None, limits: dict[str, int] | None = None) -> list[LintWarning]:
    if isinstance(task, ChainTask):
        stages = (("$.text_stage", task.text_stage, limits), ("$.audio_stage", task.audio_stage, None))
        return [LintWarning(w.code, prefix + w.path[1:], w.message)
                for prefix, stage, stage_limits in stages for w in lint_task(stage, device, stage_limits)]
    out: list[LintWarning] = []
    if isinstance(task, (AudioTask, GPTTask)):
        out += _sampling_checks(task, "$.")
    out += _quant_checks(task, device, "$.")
    out += _length_checks(task, limits, "$.")
    if isinstance(task, AudioLDMTask) and task.guidance_scale <= 1.0 and task.negative_prompt:
        out.append(LintWarning("negative-prompt-unused", "$.negative_prompt",
                               "guidance_scale <= 1 disables classifier-free guidance: negative_prompt has no effect"))
    return out
