"""Train the two stand-in models once, here; the harness ships their files, CI never trains.

Provenance of ``harness/models/standins/`` (see docs/standins.md for the measured cost):

- ``gpt2``: a byte-level BPE tokenizer (2,048 tokens) and a 2-layer, 64-wide GPT-2 trained
  on CPython's own ``pydoc_data/topics.py`` (the interpreter's reference prose, ~465 K
  characters, on disk with every Python), one document per topic, ``<|endoftext|>`` between.
- ``musicgen``: up to 400 scores of music21's corpus, as many as the render cap allows (Bach
  chorales, Palestrina, Monteverdi, Trecento ballate, Ryan's Mammoth fiddle tunes), rendered
  to 16 kHz audio with pretty_midi's additive synthesiser (sine, or a sawtooth for the fiddle
  tunes), captioned from metadata (style, tune type, key, voices, tempo class). The
  EnCodec-style codec keeps a seeded encoder/decoder; its residual codebooks are fitted by
  k-means to the encoder's frames of the training audio (EnCodec's own codebook
  initialisation), so they are non-zero and used. The T5 text encoder and the MusicGen
  decoder are trained jointly on the codes, with 15 % of captions dropped to the null
  condition (zeroed encoder states, what ``generate`` feeds the unconditional half under
  classifier-free guidance).

Training-only packages (``pip install music21 pretty_midi``) are not runtime dependencies.
Run niced, 1 thread (the machine is shared; two threads spin on each other):
``nice -n 5 python scripts/train_standins.py all``. The output is not
bitwise reproducible across CPUs (float summation order), which is why the files are shipped.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "harness" / "models" / "standins"
WORK = Path("/tmp/standins-work")
SEED = 20261207


def _progress(step: int, steps: int, t0: float, minutes: float) -> float:
    """How far training is: by steps or by the wall-clock cap, whichever is further (the
    machine is shared, so a step costs what the neighbours leave)."""
    return max(step / steps, (time.time() - t0) / (minutes * 60))


def _lr_factor(step: int, steps: int, t0: float, minutes: float) -> float:
    """Linear warm-up over 50 steps, then a cosine to zero at the end of training."""
    return min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(1.0, _progress(step, steps, t0, minutes))))


# ----------------------------------------------------------------------------------------- gpt2


def gpt2_corpus() -> list[str]:
    import pydoc_data.topics as topics

    docs = []
    for name in sorted(topics.topics):
        text = re.sub(r"[ \t]+", " ", topics.topics[name]).strip()
        text = re.sub(r"\n{3,}", "\n\n", text)
        docs.append(text)
    return docs


def train_gpt2(out: Path, steps: int, threads: int, minutes: float) -> dict:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    torch.manual_seed(SEED)
    torch.set_num_threads(threads)
    docs = gpt2_corpus()
    eos = "<|endoftext|>"
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(docs, vocab_size=2048, min_frequency=2, special_tokens=[eos], show_progress=False)
    WORK.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(WORK))
    vocab = json.loads((WORK / "vocab.json").read_text())
    merges = [
        tuple(line.split(" "))
        for line in (WORK / "merges.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    tok = GPT2Tokenizer(vocab=vocab, merges=merges)
    tok.model_max_length = 256
    eos_id = vocab[eos]
    ids: list[int] = []
    for d in docs:
        ids += tok(d)["input_ids"] + [eos_id]
    data = torch.tensor(ids, dtype=torch.long)
    cfg = GPT2Config(
        vocab_size=len(vocab),
        n_positions=256,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    ctx, batch = 64, 8
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.01, betas=(0.9, 0.98))
    g = torch.Generator().manual_seed(SEED)
    t0 = time.time()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, steps, t0, minutes))
    model.train()
    for step in range(steps):
        if _progress(step, steps, t0, minutes) >= 1.0:
            step -= 1  # the steps taken: this one was not
            break
        starts = torch.randint(0, len(data) - ctx - 1, (batch,), generator=g)
        x = torch.stack([data[s : s + ctx] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"gpt2 step {step} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
    seconds = time.time() - t0
    model.eval()
    model.generation_config.pad_token_id = eos_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return {
        "model": "gpt2",
        "parameters": n_params,
        "corpus_tokens": len(ids),
        "steps": step + 1,
        "steps_planned": steps,
        "batch": batch,
        "context": ctx,
        "final_loss": round(loss.item(), 4),
        "train_seconds": round(seconds, 1),
        "threads": threads,
    }


# ------------------------------------------------------------------------------------- musicgen

SR = 16000
CLIP_S = 5.0
COLLECTIONS = {  # corpus composer -> (how many scores, caption style, waveform)
    "bach": (120, "baroque chorale", "sine"),
    "palestrina": (60, "renaissance sacred polyphony", "sine"),
    "monteverdi": (40, "renaissance madrigal", "sine"),
    "trecento": (40, "medieval ballata", "sine"),
    "ryansMammoth": (140, "irish fiddle tune", "saw"),
}
VOICES = {1: "solo melody", 2: "in two voices", 3: "in three voices", 4: "in four voices", 5: "in five voices"}
TUNE_TYPES = ("reel", "jig", "hornpipe", "strathspey", "march", "waltz", "polka", "air", "slide", "fling")


def _wave(kind: str):
    if kind == "sine":
        return np.sin

    def saw(phase):
        return 0.6 * (2 * ((phase / (2 * np.pi)) % 1.0) - 1)

    return saw


def _render_one(path: Path, composer: str, style: str, wave: str) -> dict | None:
    """One score -> its first CLIP_S seconds of audio and a caption (None: unusable)."""
    import pretty_midi
    from music21 import corpus

    score = corpus.parse(path)
    if type(score).__name__ == "Opus":
        return None
    title = (score.metadata.title if score.metadata else "") or ""
    parts = len(score.parts) or 1
    score = score.measures(0, 10)  # only the opening is rendered: analyse and write only it
    key = score.analyze("key")
    pm = pretty_midi.PrettyMIDI(str(score.write("midi")))
    for inst in pm.instruments:
        inst.program, inst.is_drum = 0, False
    audio = pm.synthesize(fs=SR, wave=_wave(wave))[: int(CLIP_S * SR)]
    if len(audio) < SR * 2:
        return None
    audio = audio / (np.abs(audio).max() + 1e-6) * 0.8
    notes = sum(len(i.notes) for i in pm.instruments)
    density = notes / max(pm.get_end_time(), 1e-3) / parts
    tempo = "slow" if density < 1.5 else "moderate" if density < 3.0 else "fast"
    tune = next((t for t in TUNE_TYPES if t in title.lower()), None)
    words = [f"irish fiddle {tune}" if tune and composer == "ryansMammoth" else style]
    words.append(VOICES.get(parts, "for many voices"))
    words.append(f"{key.tonic.name.replace('-', ' flat').replace('#', ' sharp')} {key.mode}")
    words.append(tempo)
    return {"audio": audio.astype(np.float32), "caption": ", ".join(words).lower(), "source": f"{composer}/{path.name}"}


def render_corpus(minutes: float = 8.0) -> list[dict]:
    """music21 scores -> MIDI -> pretty_midi audio + caption, the collections taken in turn
    (so a wall-clock cap still gives a balanced mix), each in a seeded shuffled order."""
    from music21 import corpus

    queues = {}
    for composer, (count, _, _) in COLLECTIONS.items():
        paths = sorted(p for p in corpus.getComposer(composer) if p.suffix in (".mxl", ".krn", ".abc", ".xml"))
        random.Random(f"{SEED}-{composer}").shuffle(paths)
        queues[composer] = paths[: int(count * 1.3)]
    items: list[dict] = []
    taken = dict.fromkeys(COLLECTIONS, 0)
    t0 = time.time()
    while any(queues.values()) and time.time() - t0 < minutes * 60:
        for composer, (count, style, wave) in COLLECTIONS.items():
            if not queues[composer] or taken[composer] >= count:
                queues[composer] = []
                continue
            path = queues[composer].pop(0)
            try:
                item = _render_one(path, composer, style, wave)
            except Exception as err:
                print(f"skip {path.name}: {type(err).__name__}", flush=True)
                continue
            if item is not None:
                items.append(item)
                taken[composer] += 1
                if len(items) % 25 == 0:
                    print(f"rendered {len(items)} ({time.time() - t0:.0f}s): {item['caption']}", flush=True)
    print(f"rendered {taken} in {time.time() - t0:.0f}s", flush=True)
    return items


def caption_vocab(captions: list[str]) -> list[str]:
    from harness.models.seeded import _WORDS

    words = sorted({w for c in captions for w in re.findall(r"[a-z0-9']+", c)})
    return list(dict.fromkeys(words + list(_WORDS)))


def musicgen_config(tok_len: int):
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    codebook_size = 256
    text = T5Config(
        vocab_size=max(tok_len, codebook_size + 1),
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    audio = EncodecConfig(
        sampling_rate=SR,
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
        ffn_dim=256,
        num_attention_heads=4,
        hidden_size=64,
        num_codebooks=4,
        dropout=0.0,
        pad_token_id=codebook_size,
        bos_token_id=codebook_size,
    )
    return MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=dec.to_dict())


def t5_tokenizer(words: list[str]):
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("▁" + w, -float(i + 1)) for i, w in enumerate(words)]
    vocab += [(c, -1000.0 - i) for i, c in enumerate("abcdefghijklmnopqrstuvwxyz0123456789.,'!?-")]
    vocab += [("▁", -2000.0)]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


@torch.no_grad()
def fit_codebooks(model, audios: list[np.ndarray], iters: int = 15) -> None:
    """Residual k-means on the seeded encoder's frames: EnCodec's codebook initialisation."""
    codec = model.audio_encoder
    frames = []
    for a in audios:
        emb = codec.encoder(torch.from_numpy(a)[None, None])  # (1, dim, T)
        frames.append(emb[0].T)
    x = torch.cat(frames)
    g = torch.Generator().manual_seed(SEED)
    residual = x.clone()
    for layer in codec.quantizer.layers:
        k = layer.codebook.embed.shape[0]
        cent = residual[torch.randperm(len(residual), generator=g)[:k]].clone()
        for _ in range(iters):
            assign = torch.cdist(residual, cent).argmin(1)
            counts = torch.bincount(assign, minlength=k).float()
            sums = torch.zeros_like(cent).index_add_(0, assign, residual)
            empty = counts == 0
            cent = torch.where(
                empty[:, None],
                residual[torch.randint(len(residual), (k,), generator=g)],
                sums / counts.clamp(min=1)[:, None],
            )
        layer.codebook.embed.copy_(cent)
        layer.codebook.embed_avg.copy_(cent)
        layer.codebook.cluster_size.fill_(1.0)
        layer.codebook.inited.fill_(1.0)
        residual = residual - cent[torch.cdist(residual, cent).argmin(1)]
        print(f"codebook fitted: residual rms {residual.pow(2).mean().sqrt():.4f} (frames {len(x)})", flush=True)


def delayed(codes: torch.Tensor, pad: int) -> torch.Tensor:
    """(B, K, T) codes -> (B, T+K-1, K) labels in MusicGen's delay pattern (pad elsewhere)."""
    b, k, t = codes.shape
    out = torch.full((b, k, t + k - 1), pad, dtype=torch.long)
    for i in range(k):
        out[:, i, i : i + t] = codes[:, i]
    return out.transpose(1, 2)


def train_musicgen(out: Path, steps: int, threads: int, minutes: float, render_minutes: float = 8.0) -> dict:
    from transformers import EncodecFeatureExtractor, MusicgenForConditionalGeneration, MusicgenProcessor

    from harness.models.seeded import seeded_fill

    torch.manual_seed(SEED)
    torch.set_num_threads(threads)
    t_render = time.time()
    cache = WORK / "rendered.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        items = [{"audio": z[f"a{i}"], **m} for i, m in enumerate(meta)]
        t_render = json.loads(str(z["seconds"]))
    else:
        items = render_corpus(render_minutes)
        t_render = time.time() - t_render
        WORK.mkdir(parents=True, exist_ok=True)
        meta = [{"caption": i["caption"], "source": i["source"]} for i in items]
        np.savez(
            cache,
            meta=json.dumps(meta),
            seconds=json.dumps(t_render),
            **{f"a{i}": it["audio"] for i, it in enumerate(items)},
        )
    if steps == 0:
        return {"clips": len(items), "render_seconds": t_render}
    captions = [i["caption"] for i in items]
    tok = t5_tokenizer(caption_vocab(captions))
    model = MusicgenForConditionalGeneration(musicgen_config(len(tok)))
    seeded_fill(model.audio_encoder, SEED, extra_buffers=lambda n: n.endswith("codebook.embed"))
    model.audio_encoder.eval()
    t_codec = time.time()
    fit_codebooks(model, [i["audio"] for i in items])
    with torch.no_grad():
        codes = []
        for it in items:
            enc = model.audio_encoder.encode(torch.from_numpy(it["audio"])[None, None])
            codes.append(enc.audio_codes[0, 0])  # (K, T)
    t_codec = time.time() - t_codec
    K = model.decoder.num_codebooks
    pad = model.config.decoder.pad_token_id
    usage = [len(torch.unique(torch.cat([c[k] for c in codes]))) for k in range(K)]
    print(f"codes: {len(codes)} clips, codebook usage {usage}", flush=True)
    text_ids = [tok(c)["input_ids"] for c in captions]
    trainable = [p for n, p in model.named_parameters() if not n.startswith("audio_encoder.")]
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(trainable, lr=2e-3, weight_decay=0.01, betas=(0.9, 0.98))
    g = torch.Generator().manual_seed(SEED)
    window, batch = 64, 8
    model.text_encoder.train()
    model.decoder.train()
    t0 = time.time()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, steps, t0, minutes))
    for step in range(steps):
        if _progress(step, steps, t0, minutes) >= 1.0:
            step -= 1  # the steps taken: this one was not
            break
        idx = torch.randint(0, len(codes), (batch,), generator=g).tolist()
        windows = []
        for i in idx:
            c = codes[i]
            s = int(torch.randint(0, max(1, c.shape[1] - window), (1,), generator=g))
            w = c[:, s : s + window]
            if w.shape[1] < window:
                w = torch.cat([w, torch.full((K, window - w.shape[1]), pad)], 1)
            windows.append(w)
        labels = delayed(torch.stack(windows), pad)
        texts = [text_ids[i] for i in idx]
        width = max(len(t) for t in texts)
        ids = torch.tensor([t + [0] * (width - len(t)) for t in texts])
        mask = (ids != 0).long()
        mask[:, 0] = 1
        hidden = model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        drop = torch.rand(batch, generator=g) < 0.15
        hidden = hidden * (~drop)[:, None, None]
        inputs = torch.cat([torch.full_like(labels[:, :1], pad), labels[:, :-1]], 1)  # start token = pad
        dec_ids = inputs.transpose(1, 2).reshape(batch * K, -1)
        loss = model(encoder_outputs=(hidden,), attention_mask=mask, decoder_input_ids=dec_ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"musicgen step {step} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
    seconds = time.time() - t0
    model.eval()
    gc = model.generation_config
    gc.decoder_start_token_id = pad
    gc.pad_token_id = pad
    gc.bos_token_id = pad
    gc.do_sample, gc.guidance_scale, gc.max_length, gc.top_k = True, 3.0, 256, 250
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    MusicgenProcessor(
        feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0),
        tokenizer=tok,
    ).save_pretrained(out)
    return {
        "model": "musicgen",
        "parameters": n_params,
        "clips": len(items),
        "clip_seconds": CLIP_S,
        "captions_example": captions[:3],
        "codebook_usage": usage,
        "render_seconds": round(t_render, 1),
        "codec_fit_seconds": round(t_codec, 1),
        "steps": step + 1,
        "steps_planned": steps,
        "batch": batch,
        "window_frames": window,
        "final_loss": round(loss.item(), 4),
        "train_seconds": round(seconds, 1),
        "threads": threads,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["gpt2", "musicgen", "render", "all", "pin"])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--gpt2-steps", type=int, default=4000)
    ap.add_argument("--musicgen-steps", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=6.0, help="wall-clock cap per model's training loop")
    ap.add_argument("--render-minutes", type=float, default=8.0, help="wall-clock cap on rendering the corpus")
    args = ap.parse_args()
    if args.which == "pin":  # the digests to paste into harness/models/standins.py
        from harness.models.standins import folder_digests

        print({name: folder_digests(args.out / name) for name in ("gpt2", "musicgen")})
        return
    reports = []
    if args.which in ("gpt2", "all"):
        reports.append(train_gpt2(args.out / "gpt2", args.gpt2_steps, args.threads, args.minutes))
    if args.which == "render":
        train_musicgen(args.out / "musicgen", 0, args.threads, 0.0, args.render_minutes)
        return
    if args.which in ("musicgen", "all"):
        reports.append(
            train_musicgen(args.out / "musicgen", args.musicgen_steps, args.threads, args.minutes, args.render_minutes)
        )
    for r in reports:
        r.update({"torch": torch.__version__, "date": time.strftime("%Y-%m-%d")})
        WORK.mkdir(parents=True, exist_ok=True)
        (WORK / f"train-{r['model']}.json").write_text(json.dumps(r, indent=2) + "\n")
        print(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
