"""Utterances of all tracks meet in one decode when they queue; alone, one goes at once."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np

from callrelay.asr.base import Transcript
from callrelay.asr.segmenter import Utterance
from callrelay.asr.whisper import BatchQueue, BatchResult


def utterance(number: int) -> Utterance:
    return Utterance(np.zeros(160, np.float32), number, number + 1)


def text_of(decode: Future[Transcript | None]) -> str:
    transcript = decode.result(5)
    assert transcript is not None
    return transcript.text


def test_an_utterance_alone_is_decoded_at_once() -> None:
    calls: list[int] = []

    def decode(batch: list[Utterance]) -> list[Transcript | None]:
        calls.append(len(batch))
        return [Transcript(str(u.speech_start), 0, 0) for u in batch]

    queue = BatchQueue(decode, workers=1, max_batch=8)
    assert queue.submit(utterance(7)).result(5) == Transcript("7", 0, 0)
    assert calls == [1]


def test_utterances_that_wait_are_decoded_together() -> None:
    release = threading.Event()
    calls: list[list[int]] = []

    def decode(batch: list[Utterance]) -> list[Transcript | None]:
        calls.append([u.speech_start for u in batch])
        release.wait(5)
        return [Transcript(str(u.speech_start), 0, 0) for u in batch]

    queue = BatchQueue(decode, workers=1, max_batch=3)
    first = queue.submit(utterance(0))
    while not calls:  # the one worker is now busy with the first
        threading.Event().wait(0.01)
    waiting = [queue.submit(utterance(n)) for n in range(1, 6)]
    release.set()
    assert text_of(first) == "0"
    assert [text_of(f) for f in waiting] == ["1", "2", "3", "4", "5"]
    # Five waited for the one worker: a batch of three (the most it takes), then two.
    assert calls == [[0], [1, 2, 3], [4, 5]]


class BlockingDecoder:
    """Records each batch it is given and holds the first one until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[list[int]] = []

    def __call__(self, batch: list[Utterance]) -> list[Transcript | None]:
        self.calls.append([u.speech_start for u in batch])
        self.release.wait(5)
        return [Transcript(str(u.speech_start), 0, 0) for u in batch]

    def wait_busy(self) -> None:
        while not self.calls:
            threading.Event().wait(0.01)


def test_early_utterances_go_only_when_no_confirmed_one_waits() -> None:
    decoder = BlockingDecoder()
    queue = BatchQueue(decoder, workers=1, max_batch=8)
    assert queue.has_idle_worker
    first = queue.submit(utterance(0))
    decoder.wait_busy()
    assert not queue.has_idle_worker
    early = queue.submit(utterance(1), early=True)
    confirmed = queue.submit(utterance(2))
    decoder.release.set()
    assert [text_of(f) for f in (first, confirmed, early)] == ["0", "2", "1"]
    assert decoder.calls == [[0], [2], [1]]


def test_a_withdrawn_early_utterance_is_never_decoded() -> None:
    decoder = BlockingDecoder()
    queue = BatchQueue(decoder, workers=1, max_batch=8)
    queue.submit(utterance(0))
    decoder.wait_busy()
    early = queue.submit(utterance(1), early=True)
    assert early.cancel()
    decoder.release.set()
    assert text_of(queue.submit(utterance(2))) == "2"
    assert decoder.calls == [[0], [2]]


def test_a_confirmed_early_utterance_goes_ahead_of_other_early_ones() -> None:
    decoder = BlockingDecoder()
    queue = BatchQueue(decoder, workers=1, max_batch=1)
    queue.submit(utterance(0))
    decoder.wait_busy()
    still_early = queue.submit(utterance(1), early=True)
    confirmed = queue.submit(utterance(2), early=True)
    queue.confirm(confirmed)
    decoder.release.set()
    assert text_of(confirmed) == "2" and text_of(still_early) == "1"
    assert decoder.calls == [[0], [2], [1]]


def test_the_wait_for_a_worker_and_the_decode_time_are_reported() -> None:
    decoder = BlockingDecoder()
    queue = BatchQueue(decoder, workers=1, max_batch=1)
    assert queue.timings() == {"queueWait": {}, "decode": {}}
    first = queue.submit(utterance(0))
    decoder.wait_busy()
    second = queue.submit(utterance(1))  # waits while the first is held
    threading.Event().wait(0.3)
    decoder.release.set()
    went_first, waited = first.result(5), second.result(5)
    timings = queue.timings()
    # The first went at once and took the 0.3 s it was held; the second waited those 0.3 s
    # and took no time. Of two values, the 95th percentile is 95% of the way to the larger.
    assert timings["decode"]["p95"] >= 0.95 * 0.3
    assert timings["queueWait"]["p95"] >= 0.95 * 0.3
    assert timings["queueWait"]["p50"] < 0.2
    # Each transcript carries its own two figures, for its line in the log.
    assert went_first is not None and waited is not None
    assert went_first.queue_seconds is not None and went_first.queue_seconds < 0.2
    assert went_first.decode_seconds is not None and went_first.decode_seconds >= 0.3
    assert waited.queue_seconds is not None and waited.queue_seconds >= 0.3
    assert waited.decode_seconds is not None and waited.decode_seconds < 0.2


def test_work_an_utterance_still_needs_holds_back_no_other_in_its_batch() -> None:
    batches: list[list[int]] = []
    gate = threading.Event()  # holds the first batch, so that the next two queue together
    fallback_may_end = threading.Event()

    def transcribe_in_full() -> Transcript | None:
        fallback_may_end.wait(5)
        return Transcript("2 in full", 0, 0)

    def decode(batch: list[Utterance]) -> list[BatchResult]:
        batches.append([u.speech_start for u in batch])
        gate.wait(5)
        return [
            transcribe_in_full if u.speech_start == 2 else Transcript(str(u.speech_start), 0, 0)
            for u in batch
        ]

    queue = BatchQueue(decode, workers=1, max_batch=8)
    first = queue.submit(utterance(0))
    while not batches:
        threading.Event().wait(0.01)
    batch_mate, needs_more = queue.submit(utterance(1)), queue.submit(utterance(2))
    gate.set()
    assert text_of(first) == "0" and text_of(batch_mate) == "1"
    assert batches == [[0], [1, 2]]
    assert not needs_more.done()  # its fallback is still running, after its mate was delivered
    fallback_may_end.set()
    assert text_of(needs_more) == "2 in full"
