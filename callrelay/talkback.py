"""Talk-back: audio that clients send into a call, played by Twilio on a bidirectional stream.

Twilio plays what it is sent in order, from its own buffer, and says when a `mark` has been
reached. A clip is sent as 20 ms media messages (160 bytes of 8 kHz mu-law, Twilio's own frame)
paced at real time with a small lead, so that `clear` (barge-in) has little to throw away and a
clip queued behind another waits here, where it can still be dropped; then its mark. Twilio's
echo of that mark is the clip's `played`. After a `clear`, Twilio echoes the marks it still
held at once: those clips were cut off, and say so.

`TalkBack` is the pure part (what to send when, given the time); the server runs it on a
greenlet per call (`web/talkback.py`).
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soundfile
import soxr

from callrelay.audio import mulaw_encode
from callrelay.speech import SPEECH, SpeechUnavailable
from callrelay.twilio import outbound

FRAME_BYTES = 160
FRAME_SECONDS = 0.02
LEAD_SECONDS = 0.2
"""How far ahead of playback Twilio's buffer is kept."""
MAX_CLIP_SECONDS = 120.0
MAX_QUEUED_SECONDS = 300.0
PLAYBACK_RATE = 8000
TALK_PARAMETER = "callrelayTalk"
"""The `<Parameter>` the relay's own `<Connect><Stream>` TwiML carries: Twilio signs the
handshake and echoes it in `start.customParameters`, so a stream that has it is one the relay
asked to be bidirectional."""


class ClipError(ValueError):
    """Audio a client sent that cannot be played; the text says why."""


def clip_from_pcm(audio_base64: object, rate: int = 16000) -> bytes:
    """Base64 PCM16 little-endian mono at `rate` -> 8 kHz mu-law."""
    raw = _base64(audio_base64, "audio")
    if len(raw) % 2:
        raise ClipError("audio must be whole 16-bit samples (an even number of bytes)")
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    return _to_mulaw(samples, rate)


def clip_from_wav(wav_base64: object) -> bytes:
    """A base64 WAV file (any rate, mono or stereo, PCM or float) -> 8 kHz mu-law."""
    raw = _base64(wav_base64, "wav")
    try:
        samples, rate = soundfile.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise ClipError(f"wav is not a readable sound file ({error})") from None
    return _to_mulaw(samples.mean(axis=1), int(rate))


def clip_from_text(text: object) -> bytes:
    """Text spoken by the offline synthesiser -> 8 kHz mu-law."""
    if not isinstance(text, str):
        raise ClipError("'text' must be text")
    try:
        samples, rate = SPEECH.say(text)
    except (ValueError, SpeechUnavailable) as error:
        raise ClipError(str(error)) from None
    return _to_mulaw(samples.astype(np.float32) / 32768.0, rate)


def _base64(value: object, field: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise ClipError(f"'{field}' must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ClipError(f"'{field}' is not valid base64") from None


def _to_mulaw(samples: np.ndarray, rate: int) -> bytes:
    if not 8000 <= rate <= 192_000:
        raise ClipError(f"a sample rate of {rate} Hz cannot be played")
    if len(samples) == 0:
        raise ClipError("the clip is empty")
    if len(samples) / rate > MAX_CLIP_SECONDS:
        raise ClipError(f"a clip may be at most {MAX_CLIP_SECONDS:.0f} s long")
    if rate != PLAYBACK_RATE:
        samples = soxr.resample(samples, rate, PLAYBACK_RATE, quality="HQ")
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
    encoded = mulaw_encode(pcm)
    whole = -(-len(encoded) // FRAME_BYTES) * FRAME_BYTES
    return encoded + bytes([0xFF]) * (whole - len(encoded))  # mu-law silence to a whole frame


@dataclass
class _Clip:
    name: str
    mark: str
    audio: bytes
    sent: int = 0
    """Bytes of it sent to Twilio."""


class TalkBack:
    """One bidirectional stream's playback. Not thread-safe: one greenlet drives it."""

    def __init__(
        self,
        stream_sid: str,
        send: Callable[[str], None],
        played: Callable[[str, bool], None],
    ) -> None:
        """`send`: a text frame to Twilio. `played(name, interrupted)`: a clip is over."""
        self.stream_sid = stream_sid
        self._send = send
        self._played = played
        self._queue: deque[_Clip] = deque()
        self._awaiting: dict[str, tuple[str, bool]] = {}
        """Marks sent, not yet echoed: mark -> (clip name, whether it was cleared)."""
        self._marks = (f"clip-{n}" for n in itertools.count(1))
        self._playing_until = 0.0
        """When Twilio will have played everything sent so far (monotonic seconds)."""

    def play(self, mulaw: bytes, name: str) -> float:
        """Queue a clip; the seconds of audio ahead of it."""
        ahead = self.queued_seconds
        if ahead + len(mulaw) / PLAYBACK_RATE > MAX_QUEUED_SECONDS:
            raise ClipError(f"more than {MAX_QUEUED_SECONDS:.0f} s of audio would be queued")
        self._queue.append(_Clip(name, next(self._marks), mulaw))
        return ahead

    @property
    def queued_seconds(self) -> float:
        return sum(len(c.audio) - c.sent for c in self._queue) / PLAYBACK_RATE

    @property
    def busy(self) -> bool:
        return bool(self._queue)

    def pump(self, now: float) -> float | None:
        """Send what is due at `now`; how long until more is due (None: nothing queued)."""
        self._playing_until = max(self._playing_until, now)
        while self._queue and self._playing_until - now < LEAD_SECONDS - 1e-6:
            clip = self._queue[0]
            frame = clip.audio[clip.sent : clip.sent + FRAME_BYTES]
            self._send(outbound.outbound_media(self.stream_sid, frame))
            clip.sent += len(frame)
            self._playing_until += len(frame) / PLAYBACK_RATE
            if clip.sent >= len(clip.audio):
                self._queue.popleft()
                self._awaiting[clip.mark] = (clip.name, False)
                self._send(outbound.outbound_mark(self.stream_sid, clip.mark))
        if not self._queue:
            return None
        return max(0.0, self._playing_until - now - LEAD_SECONDS + FRAME_SECONDS)

    def clear(self) -> list[str]:
        """Barge-in: drop what is queued here and have Twilio drop what it holds. The names
        of the clips cut off (those Twilio holds are reported when it echoes their marks)."""
        dropped = [clip.name for clip in self._queue]
        self._queue.clear()
        self._awaiting = {mark: (name, True) for mark, (name, _) in self._awaiting.items()}
        self._playing_until = 0.0
        self._send(outbound.outbound_clear(self.stream_sid))
        for name in dropped:
            self._played(name, True)
        return dropped

    def ended(self) -> None:
        """The stream ended: every clip not heard to its end was cut off."""
        unheard = [clip.name for clip in self._queue] + [n for n, _ in self._awaiting.values()]
        self._queue.clear()
        self._awaiting.clear()
        for name in unheard:
            self._played(name, True)

    def mark_echoed(self, mark: str) -> None:
        """Twilio reached `mark` (or dropped the audio before it, after a `clear`)."""
        clip = self._awaiting.pop(mark, None)
        if clip is not None:
            name, interrupted = clip
            self._played(name, interrupted)
