"""The shared test audio beside the checkout (read-only), and helpers to read it."""

from __future__ import annotations

import csv
import wave
from pathlib import Path

import numpy as np
import pytest

SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
CALL_DIR = SHARED_AUDIO / "call"
REAL_DIR = SHARED_AUDIO / "real"


def require_shared_audio() -> None:
    if not CALL_DIR.is_dir():
        pytest.skip(f"shared test audio not found at {SHARED_AUDIO}")


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 1
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return data.astype(np.int16), wav.getframerate()


def call_turns() -> list[dict[str, str]]:
    with (CALL_DIR / "turns.tsv").open() as file:
        return list(csv.DictReader(file, delimiter="\t"))
