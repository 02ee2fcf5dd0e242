"""Prometheus metrics (`GET /metrics`), with prometheus-client.

The hot path only adds to plain integers (a media frame costs a dict update, not a metric
lock); `RelayMetrics.update` carries them into the Prometheus values once a second and at every
scrape. With several processes (`WORKERS`), prometheus-client's multiprocess mode keeps each
process's values in a file of its own under `PROMETHEUS_MULTIPROC_DIR`, which `callrelay serve`
makes fresh at every start, and a scrape of any process adds up all of them.
"""

from __future__ import annotations

import os
import threading
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from callrelay.background import start_task
from callrelay.call import AudioChunk, CallInfo, CallSink

UPDATE_SECONDS = 1.0
LATENCY_SAMPLE_EVERY = 10
"""The relay latency histogram takes every tenth message: its shape at a tenth of the cost."""

CALLS_ACTIVE = Gauge("callrelay_calls_active", "Streams being relayed", multiprocess_mode="livesum")
STREAMS_OPEN = Gauge(
    "callrelay_streams_open", "Twilio sockets being served", multiprocess_mode="livesum"
)
STREAMS_REFUSED = Counter(
    "callrelay_streams_refused", "Twilio sockets refused, by reason", ["reason"]
)
FRAMES_IN = Counter("callrelay_frames_received", "Media frames received, by track", ["track"])
FRAMES_OUT = Counter(
    "callrelay_frames_relayed", "Media frames emitted to Socket.IO, by track", ["track"]
)
FRAMES_DROPPED = Counter("callrelay_frames_dropped", "Media frames dropped, by reason", ["reason"])
RELAY_LATENCY = Histogram(
    "callrelay_relay_latency_seconds",
    "From a Twilio message's arrival to its events handed to Socket.IO (every tenth message)",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
SOCKETIO_CLIENTS = Gauge(
    "callrelay_socketio_clients", "Socket.IO clients connected", multiprocess_mode="livesum"
)
SOCKETIO_QUEUE_MAX = Gauge(
    "callrelay_socketio_queue_depth_max",
    "Packets waiting for the slowest Socket.IO client",
    multiprocess_mode="livemax",
)
SOCKETIO_DROPPED = Counter(
    "callrelay_socketio_audio_dropped", "Audio packets dropped for slow Socket.IO clients"
)
ASR_LAG = Gauge(
    "callrelay_asr_lag_seconds",
    "How far recognition is behind the furthest-behind track",
    multiprocess_mode="livemax",
)
TRANSCRIPTS = Counter("callrelay_transcripts", "Final transcripts")
TRANSCRIPT_SECONDS = Histogram(
    "callrelay_transcript_decode_seconds",
    "An utterance's wait for a decoder plus its decode (engines that report them)",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0),
)
RECORDING_BYTES = Counter("callrelay_recording_bytes", "Audio bytes written to recordings")
RECORDING_ERRORS = Counter("callrelay_recording_errors", "Recording writes the disk refused")
TWILIO_ERRORS = Counter("callrelay_twilio_rest_errors", "Twilio REST requests that failed")
WEBHOOK_DELIVERIES = Counter(
    "callrelay_webhook_deliveries",
    "Webhook deliveries finished, by event type and outcome (delivered, given_up)",
    ["event", "outcome"],
)
WEBHOOK_RETRIES = Counter(
    "callrelay_webhook_retries", "Webhook tries that failed and will be retried", ["event"]
)
WEBHOOK_BACKLOG = Gauge(
    "callrelay_webhook_backlog",
    "Webhook deliveries waiting in the outbox",
    multiprocess_mode="livemax",
)
WEBHOOK_OLDEST_SECONDS = Gauge(
    "callrelay_webhook_oldest_pending_seconds",
    "Age of the oldest webhook delivery waiting in the outbox",
    multiprocess_mode="livemax",
)
STORED_FILES = Counter("callrelay_stored_files", "Call files uploaded to the object store")
STORED_BYTES = Counter("callrelay_stored_bytes", "Bytes uploaded to the object store")
STORE_FAILURES = Counter(
    "callrelay_store_failures", "Uploads to the object store that failed and will be retried"
)
STORE_BACKLOG = Gauge(
    "callrelay_store_backlog",
    "Complete calls whose files wait to be stored",
    multiprocess_mode="livemax",
)
INDEX_BACKLOG = Gauge(
    "callrelay_history_index_backlog",
    "Calls whose latest state the history index does not have yet",
    multiprocess_mode="livemax",
)
INDEX_FAILURES = Counter(
    "callrelay_history_index_failures", "History index writes that failed and will be retried"
)
AUDIO_ACROSS = Counter(
    "callrelay_audio_events_across_processes",
    "Audio events published through Redis for a listener in another process",
)
CONNECTIONS_HANDED_OVER = Counter(
    "callrelay_connections_handed_over",
    "Connections passed to the process of the call they name (WORKERS above 1)",
)
QUEUE_UP = Gauge(
    "callrelay_message_queue_up",
    "1 when Redis carries Socket.IO events between processes (0 down, -1 none configured)",
    multiprocess_mode="livemin",
)


class RelayMetrics(CallSink):
    """This process's figures: a sink for frames and calls, and the place they are carried
    into Prometheus from the counters the relay keeps anyway."""

    def __init__(self) -> None:
        self.frames_in: Tally[str] = Tally()
        self.frames_dropped: Tally[str] = Tally()
        self.streams_refused: Tally[str] = Tally()
        self._messages = 0
        self._carried: dict[tuple[str, str], float] = {}
        self._sources: list[Callable[[], dict[str, Any]]] = []
        self._lock = threading.Lock()

    # The hot path.

    def audio(self, call: CallInfo, chunk: AudioChunk) -> None:
        if not chunk.is_gap:
            self.frames_in[chunk.track] += 1

    def message_handled(self, seconds: float) -> None:
        self._messages += 1
        if self._messages % LATENCY_SAMPLE_EVERY == 0:
            RELAY_LATENCY.observe(seconds)

    # Carrying figures into Prometheus.

    def watch(self, source: Callable[[], dict[str, Any]]) -> None:
        """`source()` gives current figures by name (see `update`); `framesRelayed` maps a
        track to the frames emitted for it."""
        self._sources.append(source)

    def update(self) -> None:
        figures: dict[str, Any] = {}
        for source in self._sources:
            figures.update(source())
        with self._lock:
            for track, count in self.frames_in.items():
                self._carry(FRAMES_IN.labels(track), ("in", track), count)
            for track, count in figures.get("framesRelayed", {}).items():
                self._carry(FRAMES_OUT.labels(track), ("out", track), count)
            for reason, count in self.frames_dropped.items():
                self._carry(FRAMES_DROPPED.labels(reason), ("dropped", reason), count)
            for reason, count in self.streams_refused.items():
                self._carry(STREAMS_REFUSED.labels(reason), ("refused", reason), count)
            totals = {
                "socketioDropped": SOCKETIO_DROPPED,
                "transcripts": TRANSCRIPTS,
                "recordingBytes": RECORDING_BYTES,
                "recordingErrors": RECORDING_ERRORS,
                "twilioErrors": TWILIO_ERRORS,
                "storedFiles": STORED_FILES,
                "storedBytes": STORED_BYTES,
                "storeFailures": STORE_FAILURES,
                "indexFailures": INDEX_FAILURES,
                "audioAcross": AUDIO_ACROSS,
            }
            for name, counter in totals.items():
                if name in figures:
                    self._carry(counter, (name, ""), figures[name])
        gauges = {
            "callsActive": CALLS_ACTIVE,
            "streamsOpen": STREAMS_OPEN,
            "socketioClients": SOCKETIO_CLIENTS,
            "socketioQueueMax": SOCKETIO_QUEUE_MAX,
            "asrLag": ASR_LAG,
            "queueUp": QUEUE_UP,
            "storeBacklog": STORE_BACKLOG,
            "indexBacklog": INDEX_BACKLOG,
        }
        for name, gauge in gauges.items():
            if name in figures:
                gauge.set(figures[name])

    def _carry(self, counter: Any, key: tuple[str, str], total: float) -> None:
        """Counters only go up: add what `total` gained since the last update."""
        gained = total - self._carried.get(key, 0)
        if gained > 0:
            counter.inc(gained)
            self._carried[key] = total

    def start(self) -> None:
        def keep_updating() -> None:
            stop = threading.Event()
            while not stop.wait(UPDATE_SECONDS):
                self.update()

        start_task("metrics", keep_updating)


def exposition() -> tuple[bytes, str]:
    """The text a scrape gets: this process's metrics, or every process's in multiprocess
    mode."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
