"""The speech engine in its own process: same answers, logs in the relay's log, a death survived;
and one such process shared by several server processes."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from callrelay.asr import EngineUnavailable, SpeechEngine, TrackRecogniser, Transcript
from callrelay.asr.base import Answer, answered
from callrelay.asr.process import (
    ProcessSpeechEngine,
    RecogniserError,
    connect_engine_process,
    start_engine_process,
)
from callrelay.asr.process.shared import SharedRecognition
from callrelay.logs import log_event
from tests.helpers import wait_for

DIE = -32768
"""A first sample that makes the test engine's process exit, as a crash would."""


class CountingRecogniser(TrackRecogniser):
    """Says how many samples it heard: a final per whole second, the rest at the end."""

    def __init__(self) -> None:
        self.position = 0
        self.reported = 0

    def accept(self, samples: np.ndarray) -> Answer:
        if len(samples) and samples[0] == DIE:
            os._exit(3)
        if len(samples) and samples[0] == 1234:
            raise ValueError("a recogniser bug")
        self.position += len(samples)
        return answered(self._seconds())

    def skip(self, sample_count: int) -> Answer:
        self.position += sample_count
        self.reported = self.position
        return answered([])

    def finish(self) -> Answer:
        if self.position == self.reported:
            return answered([])
        return answered(
            [Transcript(f"{self.position - self.reported} samples", self.reported / 16000, 0)]
        )

    def _seconds(self) -> list[Transcript]:
        results = []
        while self.position - self.reported >= 16000:
            results.append(Transcript("one second", self.reported / 16000, 0))
            self.reported += 16000
        return results


class CountingEngine(SpeechEngine):
    name = "counting"
    sample_rate = 16000

    def __init__(self) -> None:
        log_event(
            logging.getLogger("callrelay.asr"), "asr_loaded", engine=self.name, pid=os.getpid()
        )

    def new_recogniser(self, keyterms: Sequence[str] = ()) -> TrackRecogniser:
        return CountingRecogniser()

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "childPid": os.getpid()}


def counting_engine() -> SpeechEngine:
    return CountingEngine()


def no_engine() -> None:
    return None


def unavailable_engine(why: str) -> SpeechEngine:
    raise EngineUnavailable(why)


@pytest.fixture
def engine():
    started = start_engine_process(counting_engine)
    assert isinstance(started, ProcessSpeechEngine)
    yield started
    started.close()


def test_recognisers_answer_from_the_other_process(engine: ProcessSpeechEngine) -> None:
    first, second = engine.new_recogniser(), engine.new_recogniser()
    assert first.accept(np.ones(20000, np.int16)).result() == [Transcript("one second", 0.0, 0)]
    assert second.accept(np.ones(100, np.int16)).result() == []  # each track keeps its own state
    assert first.skip(12000).result() == []
    assert first.accept(np.ones(800, np.int16)).result() == []
    assert first.finish().result() == [Transcript("800 samples", 2.0, 0)]
    described = engine.describe()
    assert described["engine"] == "counting" and described["sampleRate"] == 16000
    assert described["childPid"] == described["process"] == engine.pid != os.getpid()


def test_the_engine_runs_at_a_lower_priority(engine: ProcessSpeechEngine) -> None:
    fields = Path(f"/proc/{engine.pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert int(fields[16]) == 10 + os.nice(0)  # nice, counted from the relay's own


def test_the_engine_process_runs_blas_on_one_thread(engine: ProcessSpeechEngine) -> None:
    """Spinning BLAS threads would double the encoder's CPU (numpy's OpenBLAS starts a
    thread per core)."""
    assert os.cpu_count() == 1 or threadpool_info()[0]["num_threads"] > 1  # as the relay has it
    assert engine.describe()["blasThreads"] == 1


def test_the_engines_log_lines_reach_the_relays_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="callrelay")
    engine = start_engine_process(counting_engine)
    assert engine is not None
    engine.close()
    loaded = [r for r in caplog.records if r.getMessage() == "asr_loaded"]
    assert len(loaded) == 1 and loaded[0].name == "callrelay.asr"
    assert vars(loaded[0])["callrelay_fields"]["pid"] != os.getpid()


def test_a_load_that_fails_fails_in_the_relay() -> None:
    with pytest.raises(EngineUnavailable, match="no model at /nowhere"):
        start_engine_process(partial(unavailable_engine, "no model at /nowhere"))
    assert start_engine_process(no_engine) is None


def test_a_recogniser_error_is_reported_and_the_track_goes_on(engine: ProcessSpeechEngine) -> None:
    recogniser = engine.new_recogniser()
    with pytest.raises(RecogniserError):
        recogniser.accept(np.full(10, 1234, np.int16)).result()
    assert recogniser.accept(np.ones(16000, np.int16)).result() == [
        Transcript("one second", 0.0, 0)
    ]


def test_a_dead_engine_process_is_replaced_and_tracks_go_on_at_their_place(
    engine: ProcessSpeechEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callrelay")
    recogniser = engine.new_recogniser()
    assert recogniser.accept(np.ones(20000, np.int16)).result() == [
        Transcript("one second", 0.0, 0)
    ]
    first_pid = engine.pid
    assert recogniser.accept(np.full(10, DIE, np.int16)).result() == []  # the process died under it
    assert (
        recogniser.accept(np.ones(100, np.int16)).result() == []
    )  # no waiting while there is none
    wait_for(lambda: engine.generation > 0, timeout=30)
    assert engine.alive and engine.generation == 1 and engine.pid != first_pid
    # The track goes on in the new process from where it was (20,110 samples in).
    assert recogniser.accept(np.ones(16000, np.int16)).result() == [
        Transcript("one second", 20110 / 16000, 0)
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("asr_process_died") == 1
    assert messages.count("asr_process_restarted") == 1
    died = next(r for r in caplog.records if r.getMessage() == "asr_process_died")
    assert vars(died)["callrelay_fields"]["exitCode"] == 3
    assert engine.describe()["restarts"] == 1


def test_past_its_limit_the_engine_process_is_replaced_while_busy_losing_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="callrelay")
    engine = start_engine_process(counting_engine, recycle_after=2)
    assert isinstance(engine, ProcessSpeechEngine)
    try:
        first_pid = engine.pid
        caller, receiver = engine.new_recogniser(), engine.new_recogniser()
        assert receiver.accept(np.ones(8000, np.int16)).result() == []  # half a second heard
        assert caller.accept(np.ones(16000, np.int16)).result() == [Transcript("one second", 0, 0)]
        caller.finish().result()  # the limit: a fresh process takes over, the receiver in use
        wait_for(lambda: engine.recycled == 1, timeout=60)
        assert engine.pid != first_pid and engine.describe()["draining"] == 1
        # The receiver goes on in the old process with what it had heard: its first whole
        # second ends now (a new recogniser made at its place would have lost that half).
        assert receiver.accept(np.ones(8000, np.int16)).result() == [Transcript("one second", 0, 0)]
        later = engine.new_recogniser()  # made in the new process
        assert later.accept(np.ones(16000, np.int16)).result() == [Transcript("one second", 0, 0)]
        receiver.finish().result()  # the old process's last recogniser: it stops
        wait_for(lambda: not Path(f"/proc/{first_pid}").exists(), timeout=30)
        assert engine.describe()["draining"] == 0 and engine.describe()["recycled"] == 1
        messages = [r.getMessage() for r in caplog.records]
        assert messages.count("asr_process_recycled") == 1 and "asr_process_died" not in messages
    finally:
        engine.close()


def test_server_processes_can_share_one_recognition_process_which_is_kept_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="callrelay")
    shared = SharedRecognition(counting_engine, 1)
    shared.start()
    first, second = (connect_engine_process(shared.least_used([])) for _ in range(2))
    try:
        assert isinstance(first, ProcessSpeechEngine) and isinstance(second, ProcessSpeechEngine)
        assert first.pid == second.pid == shared.pids[0]
        # Each relay's recognisers are its own, though their keys are the same numbers.
        a, b = first.new_recogniser(), second.new_recogniser()
        assert a.accept(np.ones(16000, np.int16)).result() == [Transcript("one second", 0, 0)]
        assert b.accept(np.ones(8000, np.int16)).result() == []
        assert b.finish().result() == [Transcript("8000 samples", 0, 0)]

        dead_pid = first.pid
        assert a.accept(np.full(10, DIE, np.int16)).result() == []  # the shared process died

        def restarted_and_reconnected() -> bool:
            shared.check()  # what the master's loop does each second
            return first.generation == 1 and second.generation == 1

        wait_for(restarted_and_reconnected, timeout=60)
        assert first.pid == second.pid == shared.pids[0] != dead_pid
        # Both relays carry on in the new process; the track at its place (16,010 samples in).
        assert a.accept(np.ones(16000, np.int16)).result() == [
            Transcript("one second", 16010 / 16000, 0)
        ]
        c = second.new_recogniser()
        assert c.accept(np.ones(16000, np.int16)).result() == [Transcript("one second", 0, 0)]
        shared_deaths = [
            vars(r)["callrelay_fields"]
            for r in caplog.records
            if r.getMessage() == "asr_process_died" and "shared" in vars(r)["callrelay_fields"]
        ]
        assert [death["process"] for death in shared_deaths] == [dead_pid]
    finally:
        for engine in (first, second):
            if engine is not None:
                engine.close()
        shared.stop()
    assert not any(os.path.exists(path) for path in shared.paths)


def test_a_relay_that_leaves_a_shared_process_does_not_stop_it() -> None:
    shared = SharedRecognition(counting_engine, 1)
    shared.start()
    try:
        leaving = connect_engine_process(shared.paths[0])
        assert leaving is not None
        leaving.close()
        staying = connect_engine_process(shared.paths[0])
        assert isinstance(staying, ProcessSpeechEngine) and staying.pid == shared.pids[0]
        recogniser = staying.new_recogniser()
        assert recogniser.accept(np.ones(16000, np.int16)).result() == [
            Transcript("one second", 0, 0)
        ]
        staying.close()
    finally:
        shared.stop()


def test_a_new_server_process_gets_the_least_used_recognition_process() -> None:
    shared = SharedRecognition(counting_engine, 2)  # not started: only the choice is tested
    one, two = shared.paths
    assert shared.least_used([]) == one
    assert shared.least_used([one]) == two
    assert shared.least_used([one, two, two]) == one
    assert shared.least_used([None, two]) == one
    shared.stop()
