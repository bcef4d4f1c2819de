"""Audio fixtures generated on the fly: real WAV files written with the wave module."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path


def wav_bytes_per_second(rate: int = 44100, channels: int = 2) -> int:
    return rate * channels * 2


def write_wav(path: Path, seconds: float = 1.0, *, rate: int = 44100, channels: int = 2, freq: float = 440.0) -> Path:
    """A 16-bit PCM sine tone; size ≈ 44 + seconds × rate × channels × 2 bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = int(seconds * rate)
    one_second = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * freq * i / rate))) * channels for i in range(rate)
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        whole, rest = divmod(frames, rate)
        for _ in range(whole):
            out.writeframes(one_second)
        out.writeframes(one_second[: rest * channels * 2])
    return path


def write_wav_of_size(path: Path, size: int, **kwargs) -> Path:
    """A WAV file of at least ``size`` bytes (for multi-part uploads)."""
    rate = kwargs.get("rate", 44100)
    channels = kwargs.get("channels", 2)
    return write_wav(path, seconds=size / wav_bytes_per_second(rate, channels) + 0.01, **kwargs)
