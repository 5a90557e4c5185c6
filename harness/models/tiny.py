"""Seeded tiny models, built offline, bit-identical on every machine.

Why: there is no model hub here, and tests must exercise the same transformers/diffusers code
paths a node runs with a real checkpoint. Weights are not left to each library's
initialiser (which changes between versions): after construction every parameter is
overwritten from numpy's PCG64 generator in sorted-name order, so the tensors depend only on
the builder version and seed. Tokenizers are written from explicit vocabularies (a trained
tokenizer is not byte-reproducible). Traps from FACTS.md are handled: EnCodec codebooks are
filled (zeros make every code decode to the same sound), Linear widths are multiples of 64
(bitsandbytes 4-bit on CPU), the T5 vocabulary exceeds the codebook size.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.models.seeded import _WORDS, TINY_SEED, byte_level_bpe, seeded_fill

if TYPE_CHECKING:  # transformers is imported where it is used
    from transformers import T5Tokenizer

TINY_BUILDER_VERSION = 1
TINY_NAMES = ("musicgen", "gpt2", "audioldm")


def cache_root() -> Path:
    """Where built tiny models live: $CONSENSUS_HARNESS_HOME or ~/.cache/consensus-harness."""
    env = os.environ.get("CONSENSUS_HARNESS_HOME")
    return Path(env) if env else Path.home() / ".cache" / "consensus-harness"


def tiny_dir(name: str) -> Path:
    return cache_root() / "tiny" / f"{name}-v{TINY_BUILDER_VERSION}-s{TINY_SEED}"


def weights_digest(model_dir: Path) -> str:
    """sha256 over every tensor in every safetensors file (name, dtype, shape, bytes),
    independent of file layout or metadata: the tiny model's identity in manifests."""
    from safetensors.numpy import load_file

    from harness.digests import digest_array

    h = hashlib.sha256()
    for f in sorted(model_dir.rglob("*.safetensors")):
        tensors = load_file(str(f))
        for name in sorted(tensors):
            h.update(f"{f.relative_to(model_dir).as_posix()}:{name}:".encode())
            h.update(digest_array(tensors[name]).encode())
    return h.hexdigest()


def build_gpt2(out: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    vocab, merges = byte_level_bpe(_WORDS)
    vocab["<|endoftext|>"] = len(vocab)
    # transformers annotates merges as list[str]; its BPE takes the (left, right) pairs given here
    tok = GPT2Tokenizer(vocab=vocab, merges=merges)  # type: ignore[arg-type]  # merges: pairs, not list[str]
    tok.model_max_length = 256
    eos = vocab["<|endoftext|>"]
    cfg = GPT2Config(
        vocab_size=len(vocab),
        n_positions=256,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=eos,
        eos_token_id=eos,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model: GPT2LMHeadModel = GPT2LMHeadModel(cfg).eval()
    seeded_fill(model, TINY_SEED)
    model.generation_config.pad_token_id = eos
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def _t5_tokenizer() -> T5Tokenizer:
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("▁" + w, -float(i + 1)) for i, w in enumerate(_WORDS)]
    vocab += [(c, -100.0 - i) for i, c in enumerate("abcdefghijklmnopqrstuvwxyz0123456789.,'!?-")]
    vocab += [("▁", -200.0)]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_musicgen(out: Path) -> None:
    from transformers import (
        EncodecConfig,
        EncodecFeatureExtractor,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
        T5Config,
    )

    codebook_size = 256
    tok = _t5_tokenizer()
    text = T5Config(
        vocab_size=max(len(tok), codebook_size + 1),
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=1,
        num_heads=4,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        # a generic PreTrainedConfig kwarg T5Config takes at run time; its typed signature lists T5's own only
        decoder_start_token_id=0,  # type: ignore[call-arg]  # generic config kwarg, untyped on T5Config
    )
    # frame rate 16000 / (8*5*4*2) = 50 Hz; 1000*1.6 // (50*8) = 4 codebooks
    audio = EncodecConfig(
        sampling_rate=16000,
        target_bandwidths=[1.6],
        codebook_size=codebook_size,
        codebook_dim=64,
        hidden_size=64,
        num_filters=8,
        num_residual_layers=1,
        upsampling_ratios=[8, 5, 4, 2],
        num_lstm_layers=1,
    )
    dec = MusicgenDecoderConfig(
        vocab_size=codebook_size,
        max_position_embeddings=1024,
        num_hidden_layers=2,
        ffn_dim=128,
        num_attention_heads=4,
        hidden_size=64,
        num_codebooks=4,
        dropout=0.0,
        pad_token_id=codebook_size,
        bos_token_id=codebook_size,
    )
    cfg = MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=dec.to_dict())
    model: MusicgenForConditionalGeneration = MusicgenForConditionalGeneration(cfg).eval()
    seeded_fill(model, TINY_SEED, extra_buffers=lambda n: n.endswith("codebook.embed"))
    # an EncodecModel, typed PreTrainedModel by MusicGen; torch's Module.__getattr__ types the
    # submodules reached below it (quantizer, layers, codebook) as Tensor | Module
    audio_encoder: Any = model.audio_encoder
    with_codebooks = audio_encoder.quantizer.layers
    for layer in with_codebooks:  # EMA state consistent with the filled codebook
        layer.codebook.embed_avg.data.copy_(layer.codebook.embed.data)
        layer.codebook.cluster_size.data.fill_(1.0)
        layer.codebook.inited.data.fill_(1.0)
    gc = model.generation_config
    gc.decoder_start_token_id = codebook_size
    gc.pad_token_id = codebook_size
    gc.bos_token_id = codebook_size
    gc.do_sample, gc.guidance_scale, gc.max_length = True, 3.0, 256
    model.save_pretrained(out, safe_serialization=True)
    processor = MusicgenProcessor(
        feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0),
        tokenizer=tok,
    )
    processor.save_pretrained(out)


BUILDERS: dict[str, Callable[[Path], None]] = {"musicgen": build_musicgen, "gpt2": build_gpt2}


def _register_audioldm() -> None:
    from harness.models.tiny_audioldm import build_audioldm

    BUILDERS["audioldm"] = build_audioldm


def ensure_tiny(name: str) -> Path:
    """Build ``tiny:<name>`` once into the cache (atomically) and return its folder."""
    if name not in TINY_NAMES:
        raise ValueError(f"unknown tiny model {name!r}; known: {', '.join(TINY_NAMES)}")
    target = tiny_dir(name)
    marker = target / "tiny-model.json"
    if marker.exists():
        _check_cached(target, marker)
        return target
    if name == "audioldm" and name not in BUILDERS:
        _register_audioldm()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        import torch

        with torch.random.fork_rng(devices=[]):  # the builder must not disturb the caller's RNG
            BUILDERS[name](tmp)
        info = {
            "name": name,
            "builder_version": TINY_BUILDER_VERSION,
            "seed": TINY_SEED,
            "weights_sha256": weights_digest(tmp),
        }
        (tmp / "tiny-model.json").write_text(json.dumps(info, indent=2) + "\n")
        try:
            os.replace(tmp, target)  # another process may have won the race: theirs is identical
        except OSError:
            if not marker.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class TinyCacheCorrupted(RuntimeError):
    """A cached tiny model whose weights no longer hash to what was built."""


_CHECKED: set[str] = set()


def _check_cached(target: Path, marker: Path) -> None:
    """Re-hash a cached tiny model once per process: a flipped weight would otherwise change
    every output while every record kept reporting the weights hash of the original build."""
    key = str(target)
    if key in _CHECKED:
        return
    info = json.loads(marker.read_text())
    actual = weights_digest(target)
    if actual != info.get("weights_sha256"):
        raise TinyCacheCorrupted(
            f"{target}: cached tiny model weights changed (sha256 {actual[:16]}... != built "
            f"{str(info.get('weights_sha256'))[:16]}...); delete the folder to rebuild it"
        )
    _CHECKED.add(key)


def tiny_info(name: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((ensure_tiny(name) / "tiny-model.json").read_text())
    return info
