"""Utterances of all tracks queue for the decode workers: alone, one goes at once; confirmed
ones go before early ones, and an early one withdrawn in time is never decoded."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np

from callrelay.asr.base import Transcript
from callrelay.asr.decode_queue import DecodeQueue
from callrelay.asr.segmenter import Utterance


def utterance(number: int) -> Utterance:
    return Utterance(np.zeros(160, np.float32), number, number + 1)


def text_of(decode: Future[Transcript | None]) -> str:
    transcript = decode.result(5)
    assert transcript is not None
    return transcript.text


class BlockingDecoder:
    """Records each utterance it is given and holds the first one until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[int] = []

    def __call__(self, utterance: Utterance, hotwords: str | None) -> Transcript | None:
        self.calls.append(utterance.speech_start)
        self.release.wait(5)
        return Transcript(str(utterance.speech_start), 0, 0)

    def wait_busy(self) -> None:
        while not self.calls:
            threading.Event().wait(0.01)


def held_queue() -> tuple[BlockingDecoder, DecodeQueue, Future[Transcript | None]]:
    """A one-worker queue whose worker is busy with utterance 0 until the decoder is released."""
    decoder = BlockingDecoder()
    queue = DecodeQueue(decoder, workers=1)
    first = queue.submit(utterance(0))
    decoder.wait_busy()
    return decoder, queue, first


def test_an_utterance_alone_is_decoded_at_once() -> None:
    decoder = BlockingDecoder()
    decoder.release.set()
    queue = DecodeQueue(decoder, workers=1)
    assert queue.submit(utterance(7)).result(5) == Transcript("7", 0, 0)
    assert decoder.calls == [7]


def test_utterances_that_wait_are_decoded_one_at_a_time_in_order() -> None:
    decoder, queue, first = held_queue()
    waiting = [queue.submit(utterance(n)) for n in range(1, 4)]
    decoder.release.set()
    assert [text_of(f) for f in (first, *waiting)] == ["0", "1", "2", "3"]
    assert decoder.calls == [0, 1, 2, 3]


def test_two_workers_decode_two_utterances_at_once() -> None:
    decoder = BlockingDecoder()
    queue = DecodeQueue(decoder, workers=2)
    first, second = queue.submit(utterance(0)), queue.submit(utterance(1))
    while len(decoder.calls) < 2:  # both held by the decoder at the same time
        threading.Event().wait(0.01)
    assert not queue.has_idle_worker
    decoder.release.set()
    assert {text_of(first), text_of(second)} == {"0", "1"}


def test_early_utterances_go_only_when_no_confirmed_one_waits() -> None:
    decoder = BlockingDecoder()
    queue = DecodeQueue(decoder, workers=1)
    assert queue.has_idle_worker
    first = queue.submit(utterance(0))
    decoder.wait_busy()
    assert not queue.has_idle_worker
    early = queue.submit(utterance(1), early=True)
    confirmed = queue.submit(utterance(2))
    decoder.release.set()
    assert [text_of(f) for f in (first, confirmed, early)] == ["0", "2", "1"]
    assert decoder.calls == [0, 2, 1]


def test_a_withdrawn_early_utterance_is_never_decoded() -> None:
    decoder, queue, _ = held_queue()
    early = queue.submit(utterance(1), early=True)
    assert early.cancel()
    decoder.release.set()
    assert text_of(queue.submit(utterance(2))) == "2"
    assert decoder.calls == [0, 2]


def test_a_confirmed_early_utterance_goes_ahead_of_other_early_ones() -> None:
    decoder, queue, _ = held_queue()
    still_early = queue.submit(utterance(1), early=True)
    confirmed = queue.submit(utterance(2), early=True)
    queue.confirm(confirmed)
    decoder.release.set()
    assert text_of(confirmed) == "2" and text_of(still_early) == "1"
    assert decoder.calls == [0, 2, 1]


def test_a_confirmed_early_utterance_keeps_its_place_before_later_confirmed_ones() -> None:
    decoder, queue, _ = held_queue()
    early = queue.submit(utterance(1), early=True)
    later = queue.submit(utterance(2))
    queue.confirm(early)
    decoder.release.set()
    assert text_of(later) == "2" and text_of(early) == "1"
    assert decoder.calls == [0, 1, 2]


def test_a_failed_decode_fails_its_utterance_only() -> None:
    def decode(utterance: Utterance, hotwords: str | None) -> Transcript | None:
        if utterance.speech_start == 1:
            raise RuntimeError("decoder broke")
        return Transcript(str(utterance.speech_start), 0, 0)

    queue = DecodeQueue(decode, workers=1)
    broken = queue.submit(utterance(1))
    assert isinstance(broken.exception(5), RuntimeError)
    assert text_of(queue.submit(utterance(2))) == "2"
    assert queue.has_idle_worker


def test_the_wait_for_a_worker_and_the_decode_time_are_reported() -> None:
    assert DecodeQueue(BlockingDecoder(), workers=1).timings() == {"queueWait": {}, "decode": {}}
    decoder, queue, first = held_queue()
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
