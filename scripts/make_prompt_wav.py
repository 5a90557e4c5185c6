"""Write the deterministic prompt sound used by the audio-prompted (continuation) tasks.

A 0.3 s A-minor chord (220, 261.63, 329.63 Hz) with 20 ms fades, 16 kHz mono int16: the
samples are computed in float64 and rounded, so every machine writes the same bytes. The
shipped tasks carry it inline as base64 (no binary file in git); this script regenerates it,
writes it as a WAV for ``audio_prompt.wav_path`` tasks, or checks the inline copy.

    python scripts/make_prompt_wav.py --wav matrices/tasks/data/prompt.wav
    python scripts/make_prompt_wav.py --base64               # print the base64 WAV
    python scripts/make_prompt_wav.py --update matrices/tasks/tiny-musicgen-continuation.json
    python scripts/make_prompt_wav.py --check matrices/tasks/*.json   # exit 1 if stale
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
from pathlib import Path

import numpy as np

RATE = 16_000
SECONDS = 0.3
CHORD_HZ = (220.0, 261.63, 329.63)
FADE_S = 0.02
PEAK = 0.5


def prompt_samples(seconds: float = SECONDS, rate: int = RATE) -> np.ndarray:
    """int16 mono samples of the chord (deterministic: float64 maths, round half to even)."""
    n = int(round(seconds * rate))
    t = np.arange(n, dtype=np.float64) / rate
    wave = sum(np.sin(2.0 * np.pi * f * t) for f in CHORD_HZ) / len(CHORD_HZ)
    fade = min(int(FADE_S * rate), n // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
        wave[:fade] *= ramp
        wave[n - fade :] *= ramp[::-1]
    return np.rint(wave * PEAK * 32767.0).astype("<i2")


def prompt_wav_bytes(seconds: float = SECONDS, rate: int = RATE) -> bytes:
    from scipy.io import wavfile

    buf = io.BytesIO()
    wavfile.write(buf, rate, prompt_samples(seconds, rate))
    return buf.getvalue()


def prompt_base64(seconds: float = SECONDS, rate: int = RATE) -> str:
    return base64.b64encode(prompt_wav_bytes(seconds, rate)).decode("ascii")


def _audio_prompts(doc: object):
    """Every ``audio_prompt`` object holding base64 in a task document (chains included)."""
    if isinstance(doc, dict):
        ap = doc.get("audio_prompt")
        if isinstance(ap, dict) and "base64" in ap:
            yield ap
        for v in doc.values():
            yield from _audio_prompts(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _audio_prompts(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wav", type=Path, help="write the WAV here")
    p.add_argument("--base64", action="store_true", help="print the WAV as base64")
    p.add_argument("--update", nargs="*", type=Path, default=[], help="rewrite audio_prompt.base64 in these task files")
    p.add_argument("--check", nargs="*", type=Path, default=[], help="exit 1 when a task file's base64 prompt is stale")
    p.add_argument("--seconds", type=float, default=SECONDS)
    args = p.parse_args(argv)
    b64 = prompt_base64(args.seconds)
    if args.wav:
        args.wav.parent.mkdir(parents=True, exist_ok=True)
        args.wav.write_bytes(prompt_wav_bytes(args.seconds))
        print(f"wrote {args.wav} ({args.wav.stat().st_size} bytes)")
    if args.base64:
        print(b64)
    for path in args.update:
        doc = json.loads(path.read_text(encoding="utf-8"))
        prompts = list(_audio_prompts(doc))
        for ap in prompts:
            ap["base64"] = b64
        path.write_text(json.dumps(doc, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"updated {len(prompts)} audio prompt(s) in {path}")
    stale = [
        path
        for path in args.check
        for ap in _audio_prompts(json.loads(path.read_text(encoding="utf-8")))
        if ap["base64"] != b64
    ]
    for path in stale:
        print(f"stale prompt audio in {path}; run: python scripts/make_prompt_wav.py --update {path}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
