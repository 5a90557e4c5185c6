"""A tiny, seeded AudioLDM pipeline (diffusers), built offline and bit-identical everywhere.

Same structure as ``cvssp/audioldm``, scaled down: a CLAP text model with projection whose
L2-normalised text embedding conditions the UNet through a FiLM-style class embedding
(``class_embed_type="simple_projection"``, concatenated to the time embedding), no
encoder_hidden_states (``cross_attention_dim`` equals ``block_out_channels``, as the diffusers
conversion script writes it, so the attention blocks attend to themselves), a 1-channel
AutoencoderKL over log-mel spectrograms, a SpeechT5 HiFi-GAN vocoder and a DDIM scheduler.

Why the vocoder keeps realistic upsample rates (5, 4, 2, 2, 2: hop 160 at 16 kHz, 100 mel
frames a second): the pipeline sizes the spectrogram from ``prod(upsample_rates)``, and tiny
rates make a 5 s clip a huge spectrogram (23 s per step, FACTS.md). Weights come from
``seeded_fill`` with one derived seed per component, so a component can change without
moving the others' bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.models.seeded import _WORDS, TINY_SEED, seeded_fill

if TYPE_CHECKING:  # transformers is imported where it is used
    from transformers import RobertaTokenizer

MEL_BINS = 64  # vocoder model_in_dim; real AudioLDM uses 64 as well
SAMPLING_RATE = 16000
UPSAMPLE_RATES = (5, 4, 2, 2, 2)  # product 160 = hop length, as in cvssp/audioldm
TEXT_MAX_LENGTH = 128
PROJECTION_DIM = 64
# Words of the PaddleMIX seed's negative prompt, so it tokenizes into words, not bytes.
_EXTRA_WORDS = [
    "low",
    "quality",
    "average",
    "muffled",
    "noise",
    "interference",
    "poor",
    "grade",
    "inaudible",
    "fidelity",
]
# Component seeds: TINY_SEED plus a fixed offset each (never reorder).
_SEED_OFFSETS = {"text_encoder": 1, "unet": 2, "vae": 3, "vocoder": 4}


def _roberta_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """RoBERTa/CLAP layout (<s>=0, <pad>=1, </s>=2, <unk>=3), the 256 byte symbols, then
    deterministic merges that build each fixed word left to right, then <mask>."""
    from harness.models.seeded import byte_level_bpe

    vocab, merges = byte_level_bpe([*_WORDS, *_EXTRA_WORDS], specials=("<s>", "<pad>", "</s>", "<unk>"))
    vocab["<mask>"] = len(vocab)
    return vocab, merges


def _tokenizer() -> RobertaTokenizer:
    from transformers import RobertaTokenizer

    vocab, merges = _roberta_vocab()
    # transformers 5: file args are ignored; merges is annotated list[str], its BPE takes the (left, right) pairs
    tok = RobertaTokenizer(vocab=vocab, merges=merges)  # type: ignore[arg-type]  # merges: pairs, not list[str]
    tok.model_max_length = TEXT_MAX_LENGTH
    return tok


def build_audioldm(out: Path) -> None:
    import torch
    from diffusers import AudioLDMPipeline, AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    tok = _tokenizer()
    text_cfg = ClapTextConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=TEXT_MAX_LENGTH + 2,
        projection_dim=PROJECTION_DIM,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
    )
    text_encoder: ClapTextModelWithProjection = ClapTextModelWithProjection(text_cfg).eval()
    seeded_fill(text_encoder, TINY_SEED + _SEED_OFFSETS["text_encoder"])

    block_out = (16, 32)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=block_out,
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
        cross_attention_dim=block_out,  # no text cross-attention: AudioLDM conditions via FiLM
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=PROJECTION_DIM,
        class_embeddings_concat=True,
    ).eval()
    seeded_fill(unet, TINY_SEED + _SEED_OFFSETS["unet"])
    with torch.no_grad():
        # The class embedding's input is an L2-normalised vector (norm 1, not O(1) entries), so
        # fan-in scaling leaves it ~8x too small next to the time embedding and prompts would
        # barely move the audio. Scale by sqrt(fan_in) = 8: exact in every float format.
        unet.class_embedding.weight.mul_(float(PROJECTION_DIM) ** 0.5)

    vae = AutoencoderKL(
        in_channels=1,
        out_channels=1,
        latent_channels=4,
        block_out_channels=(8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=256,
        scaling_factor=1.0,
    ).eval()  # vae_scale_factor 4, as in cvssp/audioldm
    seeded_fill(vae, TINY_SEED + _SEED_OFFSETS["vae"])

    vocoder_cfg = SpeechT5HifiGanConfig(
        model_in_dim=MEL_BINS,
        sampling_rate=SAMPLING_RATE,
        upsample_initial_channel=64,
        upsample_rates=list(UPSAMPLE_RATES),
        upsample_kernel_sizes=[16, 16, 8, 4, 4],
        resblock_kernel_sizes=[3, 7],
        resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
        normalize_before=False,  # as cvssp/audioldm; its mean/scale buffers stay unused
    )
    vocoder: SpeechT5HifiGan = SpeechT5HifiGan(vocoder_cfg).eval()
    seeded_fill(vocoder, TINY_SEED + _SEED_OFFSETS["vocoder"])

    scheduler = DDIMScheduler(  # cvssp/audioldm's scheduler settings
        num_train_timesteps=1000,
        beta_start=0.0015,
        beta_end=0.0195,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    with torch.no_grad():
        pipe = AudioLDMPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=scheduler, vocoder=vocoder
        )
    pipe.save_pretrained(out, safe_serialization=True)


__all__ = ["MEL_BINS", "SAMPLING_RATE", "UPSAMPLE_RATES", "build_audioldm"]
