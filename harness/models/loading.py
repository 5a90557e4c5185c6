"""Resolve a model reference and load it with the asked dtype and quantization.

A reference is ``tiny:<name>`` (built offline on demand), ``standin:<name>`` (a trained
stand-in shipped with the harness, digests checked), a local folder, or a Hugging Face
id resolved from the local cache only: nothing is downloaded at run time. Safe defaults:
``trust_remote_code=False`` and safetensors only, unless the user opts in explicitly
(``HARNESS_TRUST_REMOTE_CODE=1`` / ``HARNESS_ALLOW_PICKLE_WEIGHTS=1``).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from harness.errors import HarnessError
from harness.models.standins import STANDIN_NAMES, standin_dir
from harness.models.tiny import TINY_NAMES, ensure_tiny, weights_digest

if TYPE_CHECKING:  # torch and transformers are imported where they are used
    import torch
    from transformers import BitsAndBytesConfig, PreTrainedConfig

TINY_PREFIX = "tiny:"
STANDIN_PREFIX = "standin:"


class ModelNotFound(HarnessError, LookupError):
    """The model is neither a tiny model, a local folder nor in the local HF cache."""


class UnsupportedConfiguration(HarnessError, RuntimeError):
    """A dtype/quantization/device combination this machine cannot run (recorded as skipped)."""


@dataclass(frozen=True)
class ResolvedModel:
    ref: str  # what the task said
    path: str  # folder or cached snapshot to load from
    source: str  # tiny | standin | local | hf-cache
    weights_sha256: str | None = None  # tiny models and stand-ins


def trust_remote_code() -> bool:
    return os.environ.get("HARNESS_TRUST_REMOTE_CODE") == "1"


def safetensors_only() -> bool:
    return os.environ.get("HARNESS_ALLOW_PICKLE_WEIGHTS") != "1"


@functools.cache
def _standin_weights(path: str) -> str:
    """The tensor-level hash manifests record, computed once: the files are pinned."""
    return weights_digest(Path(path))


def is_builtin(ref: str) -> bool:
    """A model the harness itself provides (tiny or stand-in): runners are given its folder."""
    return ref.startswith((TINY_PREFIX, STANDIN_PREFIX))


def resolve_model(ref: str) -> ResolvedModel:
    """Map a task's ``model`` string to files on this machine, or say clearly why not."""
    if ref.startswith(TINY_PREFIX):
        name = ref.removeprefix(TINY_PREFIX)
        if name not in TINY_NAMES:
            raise ModelNotFound(f"unknown tiny model {ref!r}; known: {', '.join(TINY_PREFIX + n for n in TINY_NAMES)}")
        path = ensure_tiny(name)
        info = json.loads((path / "tiny-model.json").read_text())
        return ResolvedModel(ref, str(path), "tiny", info["weights_sha256"])
    if ref.startswith(STANDIN_PREFIX):
        name = ref.removeprefix(STANDIN_PREFIX)
        if name not in STANDIN_NAMES:
            known = ", ".join(STANDIN_PREFIX + n for n in STANDIN_NAMES)
            raise ModelNotFound(f"unknown stand-in model {ref!r}; known: {known}")
        path = standin_dir(name)  # every file's pinned sha256 checked first (once per process)
        return ResolvedModel(ref, str(path), "standin", _standin_weights(str(path)))
    local = Path(ref).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists() and not (local / "model_index.json").exists():
            raise ModelNotFound(f"model folder {ref!r} has no config.json or model_index.json")
        return ResolvedModel(ref, str(local.resolve()), "local")
    return _resolve_hf_cache(ref)


def _resolve_hf_cache(repo_id: str) -> ResolvedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        path = snapshot_download(repo_id, local_files_only=True)
    except HFValidationError:
        raise ModelNotFound(
            f"model {repo_id!r} is not a {TINY_PREFIX} or {STANDIN_PREFIX} model, a local folder, or a valid "
            f"Hugging Face id"
        ) from None
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        from huggingface_hub.constants import HF_HUB_CACHE

        raise ModelNotFound(
            f"model {repo_id!r} is not in the local Hugging Face cache ({HF_HUB_CACHE}); this harness never "
            f"downloads: fetch it on a connected machine (`hf download {repo_id}`) or use a tiny: model"
        ) from None
    return ResolvedModel(repo_id, path, "hf-cache")


def resolve_dtype(requested: str, config: Any) -> str:
    """``auto`` means the model config's dtype (float32 when it names none)."""
    if requested != "auto":
        return requested
    for attr in ("dtype", "torch_dtype"):
        value = getattr(config, attr, None)
        if value is not None:
            return str(value).replace("torch.", "")
    return "float32"


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


@dataclass
class QuantizationReport:
    """How many layers a backend really quantized: a backend that skips a layer type
    (GPT-2's Conv1D for some) must not pass as quantized."""

    bits: int | None
    backend: str | None
    quantized_layers: int = 0
    linear_layers: int = 0
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "backend": self.backend,
            "quantized_layers": self.quantized_layers,
            "linear_layers": self.linear_layers,
            "skipped_examples": self.skipped[:8],
        }


def quantization_config(bits: int | None, device: str) -> BitsAndBytesConfig | None:
    """The BitsAndBytesConfig a node would pass; refuse what this device cannot run."""
    if bits is None:
        return None
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as err:
        raise UnsupportedConfiguration(f"{bits}-bit quantization needs bitsandbytes ({err})") from None
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UnsupportedConfiguration(f"{bits}-bit on {device}: CUDA is not available")
    # Exactly what both network runners build (audio-task through transformers 4.x's
    # ``load_in_4bit=True``, gpt-task explicitly): every 4-bit setting left at its default,
    # i.e. fp4 weights, float32 compute, no double quantization. A "better" nf4 / model-dtype
    # compute config gives other tokens than every node (measured: codes differ from frame 0).
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True)


def count_quantized(model: torch.nn.Module, bits: int | None) -> QuantizationReport:
    import torch

    report = QuantizationReport(bits=bits, backend="bitsandbytes" if bits else None)
    if bits is None:
        return report
    try:
        import bitsandbytes as bnb

        # bitsandbytes.nn imports these from .modules without __all__ (an implicit re-export)
        qtypes: tuple[type[torch.nn.Module], ...] = (
            bnb.nn.Linear8bitLt,  # type: ignore[attr-defined]  # implicit re-export
            bnb.nn.Linear4bit,  # type: ignore[attr-defined]  # implicit re-export
        )
    except ImportError:
        qtypes = ()
    from transformers.pytorch_utils import Conv1D

    for name, module in model.named_modules():
        if qtypes and isinstance(module, qtypes):
            report.quantized_layers += 1
            report.linear_layers += 1
        elif isinstance(module, (torch.nn.Linear, Conv1D)):
            report.linear_layers += 1
            report.skipped.append(name)
    return report


def load_kwargs(dtype: str, bits: int | None, device: str) -> dict[str, Any]:
    """Keyword arguments for ``from_pretrained``: offline, safe, the asked dtype and quantization."""
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "trust_remote_code": trust_remote_code(),
        "use_safetensors": True if safetensors_only() else None,
        "dtype": torch_dtype(dtype),
    }
    qc = quantization_config(bits, device)
    if qc is not None:
        kwargs["quantization_config"] = qc
        kwargs["device_map"] = {"": device if device != "cpu" else "cpu"}
    return kwargs


_Loaded_co = TypeVar("_Loaded_co", covariant=True)


class FromPretrained(Protocol[_Loaded_co]):
    """A class with ``from_pretrained``: a transformers Auto, model or config class, a diffusers pipeline."""

    def from_pretrained(self, pretrained_model_name_or_path: str, /, *args: Any, **kwargs: Any) -> _Loaded_co: ...


def load_pretrained(cls: FromPretrained[_Loaded_co], path: str, **kwargs: Any) -> _Loaded_co:
    """``cls.from_pretrained`` whose safe-default refusals name the switch that lifts them."""
    try:
        return cls.from_pretrained(path, **kwargs)
    except (ValueError, OSError) as err:
        text = str(err)
        if "trust_remote_code" in text or "custom code" in text:
            raise UnsupportedConfiguration(
                f"{path}: the model needs its own Python code, which this harness never runs by default "
                f"(set HARNESS_TRUST_REMOTE_CODE=1 only for code you trust)"
            ) from None
        if "safetensors" in text or "no file named" in text.lower():
            raise UnsupportedConfiguration(
                f"{path}: no safetensors weights; pickled weights (.bin) can run code when loaded and are refused "
                f"(set HARNESS_ALLOW_PICKLE_WEIGHTS=1 only for files you trust)"
            ) from None
        raise


def read_config(path: str) -> PreTrainedConfig:
    from transformers import AutoConfig

    # AutoConfig.from_pretrained is unannotated (Any); it returns the PreTrainedConfig subclass the folder names
    config: PreTrainedConfig = load_pretrained(
        AutoConfig, path, local_files_only=True, trust_remote_code=trust_remote_code()
    )
    return config


__all__ = [
    "STANDIN_PREFIX",
    "TINY_PREFIX",
    "ModelNotFound",
    "QuantizationReport",
    "ResolvedModel",
    "UnsupportedConfiguration",
    "count_quantized",
    "is_builtin",
    "load_kwargs",
    "load_pretrained",
    "quantization_config",
    "read_config",
    "resolve_dtype",
    "resolve_model",
    "torch_dtype",
    "weights_digest",
]
