"""Reading and writing audio: WAV files, base64 WAV in tasks, and confined file paths.

Why confined paths: a task comes from the network, and a task that names
``/etc/shadow`` or ``../../secret.wav`` must not make a node read it. Paths resolve (symlinks
followed) inside the current directory or a folder listed in ``HARNESS_ALLOWED_PATHS``.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from harness.errors import HarnessError, InputAudioError

if TYPE_CHECKING:
    from harness.spec.tasks import AudioPrompt

MAX_PROMPT_AUDIO_SECONDS = 30.0
MIN_PROMPT_RATE, MAX_PROMPT_RATE = 1_000, 384_000  # Hz: bounded before resampling (cost grows with the rate)
MAX_PROMPT_WAV_BYTES = int(MAX_PROMPT_AUDIO_SECONDS * MAX_PROMPT_RATE * 8 * 4) + 4096  # 30 s, 8 ch, 32-bit


class UnsafePath(HarnessError, PermissionError):
    """A path in a task that leaves the folders the user allowed."""


def allowed_roots() -> list[Path]:
    roots = [Path.cwd().resolve()]
    for item in os.environ.get("HARNESS_ALLOWED_PATHS", "").split(os.pathsep):
        if item.strip():
            roots.append(Path(item).expanduser().resolve())
    return roots


def confine(path: str | Path, field: str = "path") -> Path:
    """Resolve ``path`` and refuse it unless it lies inside an allowed root."""
    resolved = Path(path).expanduser().resolve()
    for root in allowed_roots():
        if resolved == root or root in resolved.parents:
            return resolved
    raise UnsafePath(
        f"{field}: {path!r} is outside the allowed folders (the current directory and "
        f"HARNESS_ALLOWED_PATHS); set HARNESS_ALLOWED_PATHS to allow it"
    )


def to_float_mono(data: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """WAV samples of any integer/float type as float32 in [-1, 1], channels averaged."""
    if data.dtype.kind == "i":
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max)
    elif data.dtype.kind == "u":
        info = np.iinfo(data.dtype)
        data = (data.astype(np.float32) - (info.max + 1) / 2) / ((info.max + 1) / 2)
    data = data.astype(np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    return np.ascontiguousarray(data)


def resample(audio: npt.NDArray[np.float32], from_rate: int, to_rate: int) -> npt.NDArray[np.float32]:
    if from_rate == to_rate:
        return audio
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(from_rate, to_rate)
    # scipy ships no types: resample_poly is Any here
    out: npt.NDArray[np.float32] = resample_poly(audio, to_rate // g, from_rate // g).astype(np.float32)
    return out


def read_wav_bytes(data: bytes, field: str) -> tuple[npt.NDArray[np.float32], int]:
    from scipy.io import wavfile

    if len(data) > MAX_PROMPT_WAV_BYTES:
        raise InputAudioError(f"{field}: WAV is {len(data)} bytes; the limit is {MAX_PROMPT_WAV_BYTES}")
    try:
        rate, samples = wavfile.read(io.BytesIO(data))
    except ZeroDivisionError:  # scipy divides by the header's channel count or block size
        raise InputAudioError(
            f"{field}: the WAV header gives 0 channels or a 0-byte block, so it holds no samples"
        ) from None
    except (ValueError, EOFError) as err:
        raise InputAudioError(f"{field}: not a readable WAV file ({err})") from None
    if not MIN_PROMPT_RATE <= int(rate) <= MAX_PROMPT_RATE:
        raise InputAudioError(f"{field}: sample rate {rate} Hz is outside {MIN_PROMPT_RATE}..{MAX_PROMPT_RATE} Hz")
    samples = np.asarray(samples)
    if samples.size == 0 or (samples.ndim == 2 and samples.shape[1] == 0):
        raise InputAudioError(f"{field}: WAV holds no samples (or 0 channels)")
    audio = to_float_mono(samples)
    if not np.all(np.isfinite(audio)):
        raise InputAudioError(f"{field}: WAV holds NaN or infinite samples")
    if audio.size / rate > MAX_PROMPT_AUDIO_SECONDS:
        raise InputAudioError(
            f"{field}: {audio.size / rate:.1f} s of audio; the limit is {MAX_PROMPT_AUDIO_SECONDS:.0f} s"
        )
    return audio, int(rate)


def load_audio_prompt(prompt: AudioPrompt, target_rate: int) -> npt.NDArray[np.float32]:
    """The task's audio prompt (``AudioPrompt``) as float32 mono at the model's rate."""
    if prompt.wav_path is not None:
        path = confine(prompt.wav_path, "audio_prompt.wav_path")
        try:
            raw = _read_regular(path, MAX_PROMPT_WAV_BYTES + 1)
        except OSError as err:
            raise InputAudioError(f"audio_prompt.wav_path: cannot read {prompt.wav_path!r} ({err.strerror})") from None
        audio, rate = read_wav_bytes(raw, "audio_prompt.wav_path")
    else:
        if prompt.base64 is None:  # AudioPrompt's validator requires exactly one of the two
            raise InputAudioError("audio_prompt: give exactly one of wav_path or base64")
        try:
            raw = base64.b64decode(prompt.base64, validate=True)
        except (binascii.Error, ValueError):
            raise InputAudioError("audio_prompt.base64: not valid base64") from None
        audio, rate = read_wav_bytes(raw, "audio_prompt.base64")
    return resample(audio, rate, target_rate)


def _read_regular(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of a regular file; a FIFO or device is refused without
    blocking (reading a FIFO waits forever for a writer)."""
    import os
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"audio_prompt.wav_path: {path} is not a regular file (a FIFO or device?)")
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(limit)
    finally:
        os.close(fd)


def write_wav(path: str | Path, waveform: npt.NDArray[Any], rate: int) -> None:
    """float32 (samples, channels) WAV, written atomically."""
    from scipy.io import wavfile

    from harness.store.files import atomic_write_bytes

    buf = io.BytesIO()
    wavfile.write(buf, rate, np.asarray(waveform, dtype=np.float32))
    atomic_write_bytes(Path(path), buf.getvalue())


def wav_base64(waveform: npt.NDArray[Any], rate: int) -> str:
    from scipy.io import wavfile

    buf = io.BytesIO()
    wavfile.write(buf, rate, np.asarray(waveform, dtype=np.float32))
    return base64.b64encode(buf.getvalue()).decode()
