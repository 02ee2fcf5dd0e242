"""Text to speech for talking back, offline: eSpeak NG, whose library and voices come in the
espeakng-loader wheel (no system package, no download).

eSpeak NG keeps global state, so one synthesis runs at a time; a sentence takes a few
milliseconds. Its voice is robotic but clear on a phone line, which is what a "say" box needs.
"""

from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

MAX_TEXT = 1000
AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
CHARS_UTF8 = 1
ENDPAUSE = 0x1000

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class SpeechUnavailable(RuntimeError):
    pass


ESPEAK_RATE = 1
"""eSpeak NG's parameter for the speaking rate, in words per minute (its default is 175)."""


class Speech:
    def __init__(self, voice: str = "en-us", words_per_minute: int | None = None) -> None:
        """`words_per_minute`: slower than eSpeak's own 175 is easier to follow on a phone
        line (and for a recogniser)."""
        self._voice = voice
        self._words_per_minute = words_per_minute
        self._lock = threading.Lock()
        self._library: ctypes.CDLL | None = None
        self._rate = 0
        self._chunks: list[np.ndarray] = []
        self._callback = _SynthCallback(self._collect)  # kept: eSpeak holds the pointer

    def say(self, text: str) -> tuple[np.ndarray, int]:
        """`text` spoken: 16-bit samples and their rate."""
        text = " ".join(text.split())
        if not text:
            raise ValueError("there is nothing to say")
        if len(text) > MAX_TEXT:
            raise ValueError(f"say at most {MAX_TEXT} characters at once")
        with self._lock:
            library = self._load()
            self._chunks = []
            encoded = text.encode("utf-8") + b"\0"
            status = library.espeak_Synth(
                encoded, len(encoded), 0, POS_CHARACTER, 0, CHARS_UTF8 | ENDPAUSE, None, None
            )
            if status != 0:
                raise SpeechUnavailable(f"eSpeak NG could not speak (error {status})")
            samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return samples, self._rate

    def _collect(self, wav: ctypes._Pointer[ctypes.c_short], count: int, events: object) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def _load(self) -> ctypes.CDLL:
        if self._library is not None:
            return self._library
        try:
            import espeakng_loader
        except ImportError:
            raise SpeechUnavailable("text to speech needs the espeakng-loader package") from None
        library = ctypes.CDLL(espeakng_loader.get_library_path())
        library.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        library.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data = os.path.dirname(espeakng_loader.get_data_path())  # the folder holding its data
        rate = library.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), 0)
        if rate <= 0:
            raise SpeechUnavailable("eSpeak NG did not start")
        library.espeak_SetSynthCallback(self._callback)
        if library.espeak_SetVoiceByName(self._voice.encode()) != 0:
            raise SpeechUnavailable(f"eSpeak NG has no voice {self._voice!r}")
        if self._words_per_minute is not None:
            library.espeak_SetParameter(ESPEAK_RATE, self._words_per_minute, 0)
        self._library, self._rate = library, rate
        return library


SPEECH = Speech()
"""eSpeak NG is one per process: so is this."""
