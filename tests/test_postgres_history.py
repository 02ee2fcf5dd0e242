"""DATABASE_URL: the history index in PostgreSQL (a real server, Debian's, a throwaway cluster),
shared by relays on any host; its schema migrated once however many start together; a database
that goes away or stalls costs the calls nothing, and the index catches up by itself."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import psycopg
import pytest
import requests

from callrelay.history import CallHistory
from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import StreamOptions, new_sid
from callrelay.storage.files import LocalCallFiles
from callrelay.storage.index import CallQuery
from callrelay.storage.postgres_index import MIGRATIONS, PostgresHistoryIndex, SchemaTooNew
from callrelay.storage.sqlite_index import INDEX_FILE, SqliteHistoryIndex
from tests.helpers import (
    call_audio,
    start_relay,
    stream_call,
    wait_for,
    wait_until_ended,
    wait_until_recorded,
)
from tests.postgres import PostgresServer


def logged(relay: RunningRelay, evt: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
    return [line for line in lines if line["evt"] == evt]


def listed_sids(relay: RunningRelay, query: str = "") -> list[str]:
    answer = relay.get_with_token("/calls" + query)
    assert answer.status_code == 200, answer.text
    return [call["callSid"] for call in answer.json()["calls"]]


def test_relays_starting_together_on_an_empty_database_migrate_it_once(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = postgres.new_database()
    indexes = [PostgresHistoryIndex(url) for _ in range(4)]
    for index in indexes:
        index.open()
    start = threading.Barrier(len(indexes))
    errors: list[BaseException] = []

    def migrate(index: PostgresHistoryIndex) -> None:
        start.wait()
        try:
            index.migrate()
        except BaseException as error:
            errors.append(error)

    caplog.set_level(logging.INFO, logger="callrelay.history")
    threads = [threading.Thread(target=migrate, args=(index,)) for index in indexes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for index in indexes:
        index.close()
    assert errors == []
    with psycopg.connect(url) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM callrelay_schema")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    migrated = [r for r in caplog.records if "history_schema_migrated" in r.getMessage()]
    assert len(migrated) == len(MIGRATIONS)


def test_a_database_a_newer_relay_migrated_is_refused_with_a_clear_reason(
    postgres: PostgresServer,
) -> None:
    url = postgres.new_database()
    index = PostgresHistoryIndex(url)
    index.open()
    try:
        index.migrate()
        with psycopg.connect(url, autocommit=True) as db:
            db.execute("INSERT INTO callrelay_schema VALUES (99)")
        with pytest.raises(SchemaTooNew, match=r"version 99.*upgrade"):
            index.migrate()
    finally:
        index.close()


def test_calls_kept_before_the_database_was_set_are_indexed_into_it(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    before = CallHistory(LocalCallFiles(tmp_path), SqliteHistoryIndex(tmp_path / INDEX_FILE))
    before.open()
    call_sid = new_sid("CA")
    before.webhook(call_sid, {"From": "+14155550100", "To": "+14155550177"})
    (tmp_path / call_sid / "transcript.jsonl").write_text(
        json.dumps({"speaker": "Caller", "text": "my parcel is late", "start": 0, "end": 1}) + "\n"
    )
    before.close()
    after = CallHistory(LocalCallFiles(tmp_path), PostgresHistoryIndex(postgres.new_database()))
    after.open()
    try:
        assert after.indexer.wait_indexed(30)
        [call] = after.calls(CallQuery(text="PARCEL"))
        assert call["callSid"] == call_sid and call["to"] == "+14155550177"
    finally:
        after.close()


# Relays sharing one database.


def test_a_call_taken_by_one_relay_is_listed_and_found_by_what_was_said_on_another(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.new_database()
    a = start_relay(tmp_path / "a", {"ASR_ENGINE": "whisper", "DATABASE_URL": url})
    b = start_relay(tmp_path / "b", {"ASR_ENGINE": "off", "DATABASE_URL": url})
    try:
        call_sid = new_sid("CA")
        observer = a.observer(call_sid=call_sid, audio=False)
        stream_call(a, call_audio(6), StreamOptions(speed=0), call_sid)
        assert observer.completed.wait(90)
        observer.close()
        said = [
            text for name, data in observer.events if name == "Caller" for text in [data["text"]]
        ]
        word = next(w.strip(".,!?").lower() for w in " ".join(said).split() if len(w) > 4)
        wait_for(lambda: listed_sids(b, f"?q={word.upper()}") == [call_sid], timeout=30)
        assert listed_sids(b) == [call_sid] == listed_sids(a)
        assert listed_sids(b, "?q=nothing-said-like-this") == []
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 3600))
        assert listed_sids(b, f"?since={since}&limit=1") == [call_sid]
        [summary] = b.get_with_token("/calls").json()["calls"]
        assert summary["status"] == "ended" and summary["seconds"] == pytest.approx(6, abs=0.1)
    finally:
        stop_relay(a)
        stop_relay(b)


def test_the_database_going_away_mid_call_costs_the_call_nothing_and_the_index_catches_up(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    relay = start_relay(tmp_path, {"ASR_ENGINE": "off", "DATABASE_URL": postgres.new_database()})
    restarted = False
    try:
        wait_for(lambda: relay.get_with_token("/calls").status_code == 200)
        call_sid = new_sid("CA")
        player = threading.Thread(
            target=stream_call, args=(relay, call_audio(4), StreamOptions(speed=1), call_sid)
        )
        player.start()
        wait_until_recorded(relay, call_sid, 1.0)
        postgres.stop()
        player.join(60)
        wait_until_ended(relay, call_sid)
        away = relay.get_with_token("/calls")
        assert away.status_code == 503 and "catches up" in away.json()["error"]
        assert postgres.password not in away.text
        wav = relay.captures / call_sid / "caller.wav"
        assert wav.stat().st_size >= 44 + 4 * 16000 * 2  # all of it recorded meanwhile
        postgres.start()
        restarted = True
        wait_for(lambda: relay.get_with_token("/calls").status_code == 200, timeout=30)
        wait_for(lambda: listed_sids(relay) == [call_sid], timeout=30)
        wait_for(lambda: relay.get_with_token("/calls").json()["calls"][0]["status"] == "ended")
        metrics = relay.get_with_token("/metrics").text
        assert postgres.password not in metrics
    finally:
        if not restarted:
            postgres.start()
        stop_relay(relay)
    assert len(logged(relay, "history_index_unavailable")) == 1
    assert len(logged(relay, "history_index_back")) == 1
    for output in (relay.log_file, tmp_path / "server.out"):
        assert postgres.password not in output.read_text()


def test_a_stalled_database_holds_no_call_s_audio(tmp_path: Path, postgres: PostgresServer) -> None:
    """psycopg waits on its socket through gevent's patched select: a query that hangs (here
    on a table lock) suspends only the task that made it, never the calls' frames."""
    url = postgres.new_database()
    relay = start_relay(tmp_path, {"ASR_ENGINE": "off", "DATABASE_URL": url})
    try:
        wait_for(lambda: relay.get_with_token("/calls").status_code == 200)
        with psycopg.connect(url) as lock:
            lock.execute("LOCK TABLE callrelay_calls IN ACCESS EXCLUSIVE MODE")
            call_sid = new_sid("CA")
            observer = relay.observer(call_sid=call_sid)
            report = stream_call(relay, call_audio(3), StreamOptions(speed=1), call_sid)
            assert observer.ended.wait(30)
            observer.close()
            assert observer.counts["media_in"] == report.frames_sent["inbound"] == 150
            assert observer.counts["media_out"] == 150
            assert requests.get(relay.url + "/", timeout=5).status_code == 200
            assert listed_while_locked(relay) is None  # the listing waits on the lock
        wait_for(lambda: listed_sids(relay) == [call_sid], timeout=30)
    finally:
        stop_relay(relay)


def listed_while_locked(relay: RunningRelay) -> int | None:
    """The status of `GET /calls` if it answers within a second, else None."""
    try:
        return relay.get_with_token("/calls", timeout=1).status_code
    except requests.Timeout:
        return None
