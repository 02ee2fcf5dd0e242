"""Cutting one track into utterances as it streams, for engines that are not streaming (Whisper).

A small state machine over 32 ms VAD windows: SILENCE -> SPEECH when a window's speech
probability reaches `threshold`; SPEECH -> SILENCE once `min_silence` has passed below
`threshold - 0.15` (hysteresis, as Silero's own segmentation does). An utterance keeps
`pre_roll` of audio before its first speech window and `post_roll` after its last
(`long_post_roll` once it holds `long_speech` of speech), and is cut at `max_utterance` even
without a pause (Whisper sees 30 s at most).

Once its post-roll of a pause has passed, the audio the utterance keeps is complete: `settled`
is then the utterance exactly as it will close if the pause lasts to `min_silence`, so a
recogniser can start on it early and the pause only has to confirm it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callrelay.asr.vad import SAMPLE_RATE, WINDOW_SAMPLES

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SegmenterParams:
    threshold: float = 0.5
    min_silence: float = 0.4
    min_speech: float = 0.25
    pre_roll: float = 0.3
    post_roll: float = 0.2
    long_speech: float = 3.5
    long_post_roll: float = 0.1
    """A long utterance's decode is what its final waits for, and it can start only once the
    post-roll has passed: a shorter post-roll for long utterances lets it start ~0.1 s sooner
    without changing their text. Short ones keep `post_roll`: with less trailing audio Whisper
    loops on short utterances more often, and more early decodes are wasted on speakers who go
    on."""
    max_utterance: float = 25.0


@dataclass(frozen=True)
class Utterance:
    audio: FloatArray
    speech_start: int
    """First speech sample on the track's timeline (16 kHz)."""
    speech_end: int
    audio_start: int | None = None
    """Where `audio` begins on the track's timeline (its pre-roll is before the speech);
    None: at `speech_start`."""


class UtteranceSegmenter:
    def __init__(
        self,
        probabilities: Callable[[FloatArray], Sequence[float]],
        params: SegmenterParams | None = None,
    ) -> None:
        """`probabilities`: speech probability of each row of a k x 512 array of windows."""
        self._probabilities = probabilities
        self.params = p = params or SegmenterParams()
        self._pending = np.zeros(0, dtype=np.float32)
        self.position = 0
        """Samples consumed by the VAD so far."""
        self._pre_roll: deque[FloatArray] = deque(maxlen=max(1, round(p.pre_roll * 31.25)))
        self._utterance: list[FloatArray] = []
        self._speech_start = 0
        self._last_speech_end = 0
        self._in_speech = False
        self._settled: Utterance | None = None

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def settled(self) -> Utterance | None:
        """The open utterance once its audio is complete (the same object `accept` returns when
        the pause goes on to close it); None while speech may still continue."""
        return self._settled

    def accept(self, audio: FloatArray) -> list[Utterance]:
        done: list[Utterance] = []
        self._pending = np.concatenate((self._pending, audio)) if len(self._pending) else audio
        usable = len(self._pending) - len(self._pending) % WINDOW_SAMPLES
        if usable:
            windows = self._pending[:usable].reshape(-1, WINDOW_SAMPLES)
            for window, speech in zip(windows, self._probabilities(windows), strict=True):
                utterance = self._window(window, speech)
                if utterance is not None:
                    done.append(utterance)
        self._pending = self._pending[usable:]
        return done

    def _window(self, window: FloatArray, speech: float) -> Utterance | None:
        p = self.params
        start = self.position
        self.position += WINDOW_SAMPLES
        if not self._in_speech:
            if speech >= p.threshold:
                self._in_speech = True
                self._speech_start = start
                self._last_speech_end = self.position
                self._utterance = [*self._pre_roll, window]
                self._pre_roll.clear()
            else:
                self._pre_roll.append(window)
            return None
        self._utterance.append(window)
        if speech >= p.threshold - 0.15:
            self._last_speech_end = self.position
            self._settled = None
        silent_for = (self.position - self._last_speech_end) / SAMPLE_RATE
        too_long = (self.position - self._speech_start) / SAMPLE_RATE >= p.max_utterance
        if silent_for >= p.min_silence or too_long:
            return self._close()
        post_roll = self._post_roll()
        if post_roll <= silent_for < post_roll + WINDOW_SAMPLES / SAMPLE_RATE:
            self._settled = self._cut()
        return None

    def _post_roll(self) -> float:
        """Seconds of the pause the open utterance keeps."""
        p = self.params
        speech = (self._last_speech_end - self._speech_start) / SAMPLE_RATE
        return p.long_post_roll if speech >= p.long_speech else p.post_roll

    def _close(self) -> Utterance | None:
        if not self._in_speech:
            return None
        self._in_speech = False
        utterance = self._settled if self._settled is not None else self._cut()
        self._utterance = []
        self._settled = None
        return utterance

    def _cut(self) -> Utterance | None:
        """The open utterance with its post-roll of trailing silence; None if too short."""
        p = self.params
        if (self._last_speech_end - self._speech_start) / SAMPLE_RATE < p.min_speech:
            return None
        audio = np.concatenate(self._utterance)
        pre_roll_samples = len(audio) - (self.position - self._speech_start)
        keep_until = pre_roll_samples + (self._last_speech_end - self._speech_start)
        keep_until = min(len(audio), keep_until + round(self._post_roll() * SAMPLE_RATE))
        return Utterance(
            audio[:keep_until],
            self._speech_start,
            self._last_speech_end,
            audio_start=self._speech_start - pre_roll_samples,
        )

    def skip(self, sample_count: int) -> list[Utterance]:
        closed = self._close()
        self._pre_roll.clear()
        self._pending = np.zeros(0, dtype=np.float32)
        self.position += sample_count
        return [closed] if closed else []

    def finish(self) -> list[Utterance]:
        """End of stream: the tail (padded to a whole window) and any open utterance."""
        done: list[Utterance] = []
        if len(self._pending):
            tail = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
            tail[: len(self._pending)] = self._pending
            self._pending = np.zeros(0, dtype=np.float32)
            utterance = self._window(tail, self._probabilities(tail[np.newaxis, :])[0])
            if utterance is not None:
                done.append(utterance)
        closed = self._close()
        if closed is not None:
            done.append(closed)
        return done
