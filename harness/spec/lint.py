"""Semantic checks a node operator must see before trusting a task.

A task can be schema-valid and still not mean what its author thinks: ``top_p: 0.0`` with
sampling keeps one token (greedy; the seed does nothing), ``temperature: 0`` with sampling is
rejected by transformers, a token budget beyond the model's positions fails mid-run. Each
warning has a stable code, the JSON path of the field, and a one-line message.

The sampling checks read the *effective* generation config, the one a node's runner hands to
``generate``: the model's own ``generation_config.json`` with the runner's defaults (GPT: one
sequence, 256 new tokens) and then the task's fields on top. A task that leaves ``do_sample``
out samples when the model's generation config says so (MusicGen's does); when that file is not
on this machine the warning says the model decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.spec.tasks import AudioLDMTask, AudioTask, ChainTask, GPTTask, Task

# What gpt-task's resolve_generation_config sets before the task's own fields (audio-task sets nothing).
GPT_RUNNER_DEFAULTS = {"num_return_sequences": 1, "max_new_tokens": 256}


@dataclass(frozen=True)
class LintWarning:
    code: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.code} {self.path}: {self.message}"


def effective_generation(task: AudioTask | GPTTask, model_generation: dict[str, Any] | None) -> dict[str, Any]:
    """The model's generation config (when known), the runner's defaults, then the task's fields."""
    base: dict[str, Any] = {k: v for k, v in (model_generation or {}).items() if v is not None}
    if model_generation is not None:
        base.setdefault("do_sample", False)  # transformers' GenerationConfig default
    if isinstance(task, GPTTask):
        base.update(GPT_RUNNER_DEFAULTS)
    if task.generation_config is not None:
        base.update(task.generation_config.model_dump(exclude_none=True))
    return base


def _sampling_checks(
    task: AudioTask | GPTTask, prefix: str, model_generation: dict[str, Any] | None
) -> list[LintWarning]:
    cfg = effective_generation(task, model_generation)
    gc = f"{prefix}generation_config"
    out: list[LintWarning] = []
    sampling = cfg.get("do_sample")
    if sampling is not True:
        if sampling is False:
            set_by_task = task.generation_config is not None and task.generation_config.do_sample is not None
            why = (
                "do_sample is false"
                if set_by_task
                else "do_sample is not set and the model's generation config says false"
            )
        else:
            why = "do_sample is not set (the model's default decides; its generation config is not on this machine)"
        if cfg.get("num_beams", 1) > 1:
            why = f"beam search (num_beams={cfg['num_beams']}) without sampling"
        out.append(
            LintWarning(
                "seed-no-effect", f"{gc}.do_sample", f"{why}: decoding is deterministic and the seed has no effect"
            )
        )
    else:
        if cfg.get("top_p") == 0.0:
            out.append(
                LintWarning(
                    "seed-no-effect",
                    f"{gc}.top_p",
                    "top_p 0.0 keeps only the most likely token: "
                    "sampling is effectively greedy and the seed has no effect",
                )
            )
        if cfg.get("top_k") == 1:
            out.append(
                LintWarning(
                    "seed-no-effect",
                    f"{gc}.top_k",
                    "top_k 1 keeps one token: effectively greedy, the seed has no effect",
                )
            )
        if cfg.get("temperature") == 0.0:
            out.append(
                LintWarning(
                    "temperature-zero",
                    f"{gc}.temperature",
                    "temperature 0 with do_sample: transformers "
                    "rejects it (it must be > 0); use do_sample false for greedy decoding",
                )
            )
    if isinstance(task, GPTTask) and cfg.get("stop_strings"):
        out.append(
            LintWarning(
                "stop-strings-fail-on-node",
                f"{gc}.stop_strings",
                "the network's gpt-task runner (3.2.0, measured on transformers 5.24) fails every task "
                "with stop_strings (generate() gets no tokenizer to match them); this harness runs it",
            )
        )
    if isinstance(task, GPTTask):
        n = cfg.get("num_return_sequences", 1)
        if n > 1 and sampling is not True and cfg.get("num_beams", 1) < n:
            out.append(
                LintWarning(
                    "return-sequences",
                    f"{gc}.num_return_sequences",
                    f"{n} sequences need sampling or num_beams >= {n}; transformers will refuse it",
                )
            )
    return out


def _quant_checks(task: AudioTask | GPTTask | AudioLDMTask, device: str | None, prefix: str) -> list[LintWarning]:
    out: list[LintWarning] = []
    if task.quantize_bits is None:
        return out
    if device and device.startswith("mps"):
        out.append(
            LintWarning(
                "quantization-device",
                f"{prefix}quantize_bits",
                f"{task.quantize_bits}-bit bitsandbytes does not run on {device}",
            )
        )
    if device == "cpu" and task.quantize_bits == 4:
        out.append(
            LintWarning(
                "quantization-device",
                f"{prefix}quantize_bits",
                "4-bit on the CPU needs every Linear "
                "input width to be a multiple of 64 (bitsandbytes); other models fail at generation",
            )
        )
    return out


def _length_checks(task: Task, limits: dict[str, int] | None, prefix: str) -> list[LintWarning]:
    if not limits or isinstance(task, (AudioLDMTask, ChainTask)):
        return []
    limit = limits.get("max_new_tokens")
    cfg = task.generation_config
    asked = cfg.max_new_tokens if cfg and cfg.max_new_tokens else (256 if isinstance(task, GPTTask) else None)
    if limit and asked and asked > limit:
        return [
            LintWarning(
                "max-new-tokens",
                f"{prefix}generation_config.max_new_tokens",
                f"{asked} new tokens exceed the model's limit of {limit} positions",
            )
        ]
    return []


def model_generation_config(model_ref: str) -> dict[str, Any] | None:
    """The model's ``generation_config.json`` as plain JSON when the model is on this machine
    (None otherwise, or when it has none: transformers then falls back to its own defaults,
    which do not sample)."""
    import json
    from pathlib import Path

    try:
        from harness.models.loading import ModelNotFound, resolve_model

        folder = Path(resolve_model(model_ref).path)
    except (ModelNotFound, OSError, ValueError, RuntimeError):  # odd names (~user, NUL): unknown, not a crash
        return None
    try:
        doc = json.loads((folder / "generation_config.json").read_text())
    except FileNotFoundError:
        return {} if (folder / "config.json").exists() else None
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


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


def lint_task(
    task: Task,
    device: str | None = None,
    limits: dict[str, int] | None = None,
    model_generation: dict[str, Any] | None = None,
) -> list[LintWarning]:
    """``model_generation``: the model's generation_config.json (``model_generation_config``);
    a chain's stages read their own models' files."""
    if isinstance(task, ChainTask):
        stages = (("$.text_stage", task.text_stage, limits), ("$.audio_stage", task.audio_stage, None))
        return [
            LintWarning(w.code, prefix + w.path[1:], w.message)
            for prefix, stage, stage_limits in stages
            for w in lint_task(stage, device, stage_limits, model_generation_config(stage.model))
        ]
    out: list[LintWarning] = []
    if isinstance(task, (AudioTask, GPTTask)):
        out += _sampling_checks(task, "$.", model_generation)
    out += _quant_checks(task, device, "$.")
    out += _length_checks(task, limits, "$.")
    if isinstance(task, AudioLDMTask) and task.guidance_scale <= 1.0 and task.negative_prompt:
        out.append(
            LintWarning(
                "negative-prompt-unused",
                "$.negative_prompt",
                "guidance_scale <= 1 disables classifier-free guidance: negative_prompt has no effect",
            )
        )
    return out
