"""RECORDINGS_URL: each complete call's files stored in S3-compatible storage (moto's server
over real HTTP), checked before the local recordings go, read back with byte ranges; with a
shared DATABASE_URL every host lists, details, plays and deletes every host's calls; a store
that goes away or a relay killed mid-upload loses nothing; RETENTION_DAYS sweeps everywhere."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile

from callrelay.call import CallInfo
from callrelay.history import CallHistory
from callrelay.retention import RetentionSweeper
from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import StreamOptions, new_sid
from callrelay.storage.files import LocalCallFiles
from callrelay.storage.index import CallQuery
from callrelay.storage.object_store import ObjectStore
from callrelay.storage.postgres_index import PostgresHistoryIndex
from callrelay.storage.shared_files import SharedCallFiles
from tests.helpers import call_audio, start_relay, stream_call, wait_for, wait_until_ended
from tests.postgres import PostgresServer
from tests.s3_server import S3Server


def logged(relay: RunningRelay, evt: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
    return [line for line in lines if line["evt"] == evt]


def streamed_and_completed(relay: RunningRelay, seconds: float = 3) -> str:
    """A call streamed flat out, once `call_completed` (which waits for its files to be
    stored) has reached a listener."""
    call_sid = new_sid("CA")
    observer = relay.observer(call_sid=call_sid, audio=False)
    try:
        stream_call(relay, call_audio(seconds), StreamOptions(speed=0), call_sid)
        assert observer.completed.wait(60), "call_completed never came"
    finally:
        observer.close()
    return call_sid


def test_a_complete_call_is_stored_checked_and_only_then_removed_here(
    tmp_path: Path, s3: S3Server
) -> None:
    bucket = s3.new_bucket()
    relay = start_relay(tmp_path, {"ASR_ENGINE": "off", **s3.env(bucket, "prod/calls")})
    try:
        call_sid = streamed_and_completed(relay)
        stored = s3.objects(bucket)
        names = {key.rsplit("/", 1)[1] for key in stored}
        assert {"caller.wav", "receiver.wav", "call.jsonl"} <= names
        assert all(key.startswith(f"prod/calls/{call_sid}/") for key in stored)
        folder = relay.captures / call_sid
        assert not list(folder.glob("*.wav"))  # removed here once the store confirmed them
        assert (folder / "call.jsonl").exists()  # the log stays
        wav_key = f"prod/calls/{call_sid}/caller.wav"
        assert stored[wav_key] == 44 + (3 * 16000 + 80) * 2
        call = relay.get_with_token(f"/calls/{call_sid}").json()
        assert {r["name"] for r in call["recordings"]} == {"caller.wav", "receiver.wav"}
        assert call["seconds"] == pytest.approx(3.0, abs=0.1)
        stored_bytes = s3.client().get_object(Bucket=bucket, Key=wav_key)["Body"].read()
        url = next(r["url"] for r in call["recordings"] if r["name"] == "caller.wav")
        whole = requests.get(relay.url + url, timeout=10)
        assert whole.status_code == 200 and whole.content == stored_bytes
        part = requests.get(relay.url + url, headers={"Range": "bytes=1000-50999"}, timeout=10)
        assert part.status_code == 206 and part.content == stored_bytes[1000:51000]
        stereo = requests.get(relay.url + call["stereo"]["url"], timeout=10)
        both, _ = soundfile.read(io.BytesIO(stereo.content), dtype="int16")
        caller, _ = soundfile.read(io.BytesIO(stored_bytes), dtype="int16")
        assert np.array_equal(both[:, 0], caller)
        metrics = relay.get_with_token("/metrics").text
        assert f"callrelay_stored_files_total {float(len(stored))}" in metrics
        assert s3.secret_key not in metrics
    finally:
        stop_relay(relay)
    assert [line["callSid"] for line in logged(relay, "call_stored")] == [call_sid]
    assert s3.secret_key not in relay.log_file.read_text()


def test_every_host_lists_details_plays_and_deletes_every_host_s_calls(
    tmp_path: Path, s3: S3Server, postgres: PostgresServer
) -> None:
    bucket = s3.new_bucket()
    shared = {"ASR_ENGINE": "off", "DATABASE_URL": postgres.new_database(), **s3.env(bucket)}
    a = start_relay(tmp_path / "a", {**shared, "RECORDINGS_KEEP_LOCAL": "true"})
    b = start_relay(tmp_path / "b", shared)
    try:
        call_sid = streamed_and_completed(a)
        wait_for(
            lambda: [c["callSid"] for c in b.get_with_token("/calls").json()["calls"]] == [call_sid]
        )
        detail = b.get_with_token(f"/calls/{call_sid}")
        assert detail.status_code == 200
        call = detail.json()
        assert call["status"] == "ended" and call["analytics"]["caller"]["talkSeconds"] > 0
        assert {r["name"] for r in call["recordings"]} == {"caller.wav", "receiver.wav"}
        url = next(r["url"] for r in call["recordings"] if r["name"] == "caller.wav")
        here = (a.captures / call_sid / "caller.wav").read_bytes()  # kept on A
        part = requests.get(b.url + url, headers={"Range": "bytes=44-10043"}, timeout=10)
        assert part.status_code == 206 and part.content == here[44:10044]
        gone = requests.delete(
            b.url + f"/calls/{call_sid}",
            headers={"Authorization": f"Bearer {b.api_token}"},
            timeout=10,
        )
        assert gone.status_code == 204
        assert not any(call_sid in key for key in s3.objects(bucket))
        assert a.get_with_token(f"/calls/{call_sid}").status_code == 404  # A stops serving it
        assert not (a.captures / call_sid).exists()  # and removes its copy
        assert a.get_with_token("/calls").json()["calls"] == []
    finally:
        stop_relay(a)
        stop_relay(b)


def test_a_store_that_goes_away_holds_the_uploads_until_it_is_back(
    tmp_path: Path, s3: S3Server
) -> None:
    bucket = s3.new_bucket()
    relay = start_relay(tmp_path, {"ASR_ENGINE": "off", **s3.env(bucket)})
    try:
        s3.stop()
        call_sid = new_sid("CA")
        observer = relay.observer(call_sid=call_sid, audio=False)
        stream_call(relay, call_audio(2), StreamOptions(speed=0), call_sid)
        wait_until_ended(relay, call_sid)
        wait_for(lambda: logged(relay, "recordings_store_unavailable"))
        assert not observer.completed.is_set()  # announced once stored, not before
        assert (relay.captures / call_sid / "caller.wav").exists()  # kept until stored
        s3.start()
        s3.client().create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        assert observer.completed.wait(90)
        observer.close()
        assert f"calls/{call_sid}/caller.wav" in s3.objects(bucket)
        assert not (relay.captures / call_sid / "caller.wav").exists()
        metrics = relay.get_with_token("/metrics").text
        failures = next(
            float(line.split()[1])
            for line in metrics.splitlines()
            if line.startswith("callrelay_store_failures_total")
        )
        assert failures >= 1
    finally:
        stop_relay(relay)
        if s3.process is None:
            s3.start()
    assert len(logged(relay, "recordings_store_unavailable")) == 1
    assert len(logged(relay, "recordings_store_back")) == 1
    assert s3.secret_key not in relay.log_file.read_text()


def test_a_relay_killed_before_its_upload_finished_stores_the_call_at_its_next_start(
    tmp_path: Path, s3: S3Server
) -> None:
    bucket = s3.new_bucket()
    settings = {"ASR_ENGINE": "off", **s3.env(bucket)}
    first = start_relay(tmp_path, settings)
    s3.stop()  # the upload cannot finish
    try:
        call_sid = new_sid("CA")
        stream_call(first, call_audio(2), StreamOptions(speed=0), call_sid)
        wait_until_ended(first, call_sid)
        wait_for(lambda: logged(first, "recordings_store_unavailable"))
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
    finally:
        stop_relay(first)
        s3.start()
    s3.client().create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    second = start_relay(tmp_path, settings)
    try:
        wait_for(lambda: f"calls/{call_sid}/caller.wav" in s3.objects(bucket), timeout=60)
        wait_for(lambda: not (second.captures / call_sid / "caller.wav").exists())
        assert second.get_with_token(f"/calls/{call_sid}").json()["recordings"]
    finally:
        stop_relay(second)


def test_calls_older_than_the_retention_are_deleted_everywhere_in_one_logged_sweep(
    tmp_path: Path, s3: S3Server, postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = s3.new_bucket()
    os.environ.update(s3.env(bucket))
    try:
        store = ObjectStore(f"s3://{bucket}/calls")
    finally:
        for name in s3.env(bucket):
            os.environ.pop(name)
    local = LocalCallFiles(tmp_path)
    history = CallHistory(
        SharedCallFiles(local, store), PostgresHistoryIndex(postgres.new_database()), here=local
    )
    history.open()
    try:
        now = time.time()
        old, recent = new_sid("CA"), new_sid("CA")
        for call_sid, days_ago in ((old, 40), (recent, 5)):
            call = CallInfo(
                call_sid, new_sid("MZ"), "AC", ("inbound",), {}, now - days_ago * 86_400
            )
            history.call_started(call)
            history.call_ended(call, "stop")
            path = tmp_path / call_sid / "caller.wav"
            path.write_bytes(b"RIFF" + bytes(40))
            store.upload(call_sid, "caller.wav", path)
        assert history.indexer.wait_indexed(30)
        caplog.set_level("INFO", logger="callrelay.retention")
        sweeper = RetentionSweeper(history, 30, set)
        assert sweeper.sweep() == 1
        assert not (tmp_path / old).exists() and (tmp_path / recent).exists()
        assert [key.split("/")[1] for key in s3.objects(bucket)] == [recent]
        assert [c["callSid"] for c in history.calls(CallQuery())] == [recent]
        swept = [r for r in caplog.records if r.getMessage() == "retention_swept"]
        assert [r.callrelay_fields["deleted"] for r in swept] == [1]  # type: ignore[attr-defined]
    finally:
        history.close()
