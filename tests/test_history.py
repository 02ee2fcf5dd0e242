"""The call history: every call the relay saw, with its numbers, recordings and transcript, over
a token-protected API that never reads outside `captures/`, and that outlives the server."""

from __future__ import annotations

import http.client
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import soundfile

from callrelay.call import CallInfo
from callrelay.history import CallHistory
from callrelay.simulator.fake_twilio import FakeTwilio
from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import StreamOptions, new_sid
from callrelay.storage.files import LocalCallFiles
from callrelay.storage.index import CallQuery, HistoryIndex
from callrelay.storage.postgres_index import PostgresHistoryIndex
from callrelay.storage.sqlite_index import INDEX_FILE, SqliteHistoryIndex
from tests.helpers import (
    TWILIO_NUMBER,
    call_audio,
    start_relay,
    stream_call,
    wait_for,
    wait_until_ended,
)

AUTH = "Authorization"


def bearer(relay: RunningRelay) -> dict[str, str]:
    return {AUTH: f"Bearer {relay.api_token}"}


def place_call(relay: RunningRelay, fake_twilio: FakeTwilio, to: str) -> str:
    answer = relay.post("/make-call", json={"to": to})
    assert answer.status_code == 200, answer.text
    call_sid: str = answer.json()["callSid"]
    fake_twilio.wait_for_call(call_sid)

    def completed() -> bool:
        calls = requests.get(relay.url + "/calls", headers=bearer(relay), timeout=5).json()
        return any(c["callSid"] == call_sid and c["status"] == "completed" for c in calls["calls"])

    wait_for(completed)
    wait_until_ended(relay, call_sid)  # Twilio's callback can come before the stream's end
    return call_sid


def test_a_placed_call_is_in_the_history_with_numbers_times_and_recordings(
    relay: RunningRelay, fake_twilio: FakeTwilio
) -> None:
    call_sid = place_call(relay, fake_twilio, "+14155550144")
    listed = requests.get(relay.url + "/calls", headers=bearer(relay), timeout=5).json()
    first = listed["calls"][0]
    assert first["callSid"] == call_sid and first["url"] == f"/calls/{call_sid}"
    assert first["to"] == "+14155550144" and first["from"] == TWILIO_NUMBER
    assert first["direction"] == "outbound-api" and first["live"] is False
    assert first["seconds"] == pytest.approx(6.0, abs=0.1)  # the simulator plays 6 s a side
    call = requests.get(relay.url + f"/calls/{call_sid}", headers=bearer(relay), timeout=5).json()
    assert call["status"] == "completed" and call["twilioStatus"] == "completed"
    assert [r["name"] for r in call["recordings"]] == ["caller.wav", "receiver.wav"]
    for recording in call["recordings"]:
        assert recording["bytes"] == (relay.captures / call_sid / recording["name"]).stat().st_size
        assert recording["seconds"] == pytest.approx(6.0, abs=0.1)
    assert [s["tracks"] for s in call["streams"]] == [["inbound", "outbound"]]
    assert call["transcript"] == []  # recognition is off in this relay


def test_recordings_are_served_in_byte_ranges_with_the_token_or_their_signed_url(
    relay: RunningRelay, fake_twilio: FakeTwilio
) -> None:
    call_sid = place_call(relay, fake_twilio, "+14155550145")
    call = requests.get(relay.url + f"/calls/{call_sid}", headers=bearer(relay), timeout=5).json()
    caller, receiver = call["recordings"]
    on_disk = (relay.captures / call_sid / "caller.wav").read_bytes()

    whole = requests.get(relay.url + caller["url"], timeout=5)  # signed: no header needed
    assert whole.status_code == 200 and whole.content == on_disk
    assert whole.headers["Content-Type"] == "audio/wav"
    part = requests.get(relay.url + caller["url"], headers={"Range": "bytes=44-1043"}, timeout=5)
    assert part.status_code == 206 and part.content == on_disk[44:1044]
    assert part.headers["Content-Range"] == f"bytes 44-1043/{len(on_disk)}"
    with_token = requests.get(
        relay.url + f"/calls/{call_sid}/caller.wav", headers=bearer(relay), timeout=5
    )
    assert with_token.content == on_disk

    bare = f"/calls/{call_sid}/caller.wav"
    assert requests.get(relay.url + bare, timeout=5).status_code == 401
    other_signature = receiver["url"].split("?", 1)[1]  # signed for the other file
    assert requests.get(f"{relay.url}{bare}?{other_signature}", timeout=5).status_code == 401
    assert requests.get(f"{relay.url}{bare}?sig=forged", timeout=5).status_code == 401


def test_the_history_needs_the_api_token(relay: RunningRelay) -> None:
    call_sid = new_sid("CA")
    for method, path in [
        ("GET", "/calls"),
        ("GET", f"/calls/{call_sid}"),
        ("GET", f"/calls/{call_sid}/transcript"),
        ("DELETE", f"/calls/{call_sid}"),
    ]:
        for headers in ({}, {AUTH: "Bearer wrong-token"}):
            answer = requests.request(method, relay.url + path, headers=headers, timeout=5)
            assert answer.status_code == 401, (method, path)
            assert answer.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "path",
    [
        "/calls/..",
        "/calls/%2e%2e/caller.wav",
        "/calls/%2E%2E%2F%2E%2E%2Fmedia.log",
        "/calls/CA00000000000000000000000000000000x",
        "/calls/ca0123456789abcdef0123456789abcdef",
        "/calls//etc/passwd",
        "/calls/{sid}/..%2f..%2fmedia.log",
        "/calls/{sid}/%2e%2e",
        "/calls/{sid}/call.jsonl",
        "/calls/{sid}/transcript.jsonl",
        "/calls/{sid}/%2Fetc%2Fpasswd",
        "/calls/{sid}/caller.wav%00.txt",
    ],
)
def test_path_tricks_get_400_or_404_and_never_a_file(
    relay: RunningRelay, fake_twilio: FakeTwilio, path: str
) -> None:
    (relay.captures.parent / "secret.txt").write_text("not yours")
    call_sid = next(
        (p.name for p in relay.captures.iterdir() if p.name.startswith("CA")), new_sid("CA")
    )
    # http.client sends the path as written (requests would resolve the dot segments).
    connection = http.client.HTTPConnection(relay.url.removeprefix("http://"), timeout=5)
    connection.request("GET", path.format(sid=call_sid), headers=bearer(relay))
    answer = connection.getresponse()
    body = answer.read().decode()
    connection.close()
    assert answer.status in (400, 404), body
    assert answer.getheader("Content-Type", "").startswith("application/json")
    assert "not yours" not in body and "callSid" not in body


def test_transcript_as_json_and_as_text(relay: RunningRelay, fake_twilio: FakeTwilio) -> None:
    call_sid = place_call(relay, fake_twilio, "+14155550146")
    lines = [
        {"speaker": "Receiver", "text": "Hello, how can I help?", "start": 0.52, "end": 1.9},
        {"speaker": "Caller", "text": "Hi, about my order.", "start": 62.25, "end": 63.5},
    ]
    with (relay.captures / call_sid / "transcript.jsonl").open("w") as file:
        for line in reversed(lines):  # the order finals were written in, not the call's
            file.write(json.dumps(line) + "\n")
    path = relay.url + f"/calls/{call_sid}/transcript"
    as_json = requests.get(path, headers=bearer(relay), timeout=5).json()
    assert as_json == {"callSid": call_sid, "transcript": lines}
    as_text = requests.get(path + "?format=txt", headers=bearer(relay), timeout=5)
    assert as_text.headers["Content-Type"].startswith("text/plain")
    assert as_text.text == (
        "[00:00.5] Receiver: Hello, how can I help?\n[01:02.2] Caller: Hi, about my order.\n"
    )
    as_vtt = requests.get(path + "?format=vtt", headers=bearer(relay), timeout=5)
    assert as_vtt.headers["Content-Type"] == "text/vtt; charset=utf-8"
    assert as_vtt.text.startswith("WEBVTT\n\n1\n00:00:00.520 --> 00:00:01.900\n<v Receiver>")
    as_srt = requests.get(path + "?format=srt&download", headers=bearer(relay), timeout=5)
    assert as_srt.headers["Content-Type"].startswith("application/x-subrip")
    assert as_srt.headers["Content-Disposition"] == (
        f'attachment; filename="{call_sid}-transcript.srt"'
    )
    assert "\n00:01:02,250 --> 00:01:03,500\nCaller: Hi, about my order.\n" in as_srt.text
    wrong = requests.get(path + "?format=docx", headers=bearer(relay), timeout=5)
    assert wrong.status_code == 400 and "json, txt, vtt, srt" in wrong.json()["error"]
    # The signed URL `GET /calls/<CallSid>` hands out reads it without the token (a <track>).
    call = requests.get(relay.url + f"/calls/{call_sid}", headers=bearer(relay), timeout=5).json()
    signed = requests.get(relay.url + call["transcriptUrl"] + "&format=vtt", timeout=5)
    assert signed.status_code == 200 and signed.text == as_vtt.text
    assert requests.get(path + "?format=vtt", timeout=5).status_code == 401


def test_the_stereo_recording_is_both_mono_files_interleaved_and_served_in_ranges(
    relay: RunningRelay, fake_twilio: FakeTwilio
) -> None:
    call_sid = place_call(relay, fake_twilio, "+14155550147")
    call = requests.get(relay.url + f"/calls/{call_sid}", headers=bearer(relay), timeout=5).json()
    stereo = call["stereo"]
    assert stereo["name"] == "recording.wav" and stereo["channels"] == ["caller", "receiver"]
    assert stereo["seconds"] == pytest.approx(6.0, abs=0.1)
    whole = requests.get(relay.url + stereo["url"], timeout=5)  # signed: no header needed
    assert whole.status_code == 200 and whole.headers["Content-Type"] == "audio/wav"
    folder = relay.captures / call_sid
    caller, _ = soundfile.read(folder / "caller.wav", dtype="int16")
    receiver, _ = soundfile.read(folder / "receiver.wav", dtype="int16")
    both, rate = soundfile.read(io.BytesIO(whole.content), dtype="int16")
    assert rate == 16000 and both.shape == (max(len(caller), len(receiver)), 2)
    assert np.array_equal(both[: len(caller), 0], caller)
    assert np.array_equal(both[: len(receiver), 1], receiver)
    assert np.any(caller)  # the caller spoke (this simulated receiver is silent)
    part = requests.get(relay.url + stereo["url"], headers={"Range": "bytes=41-1000"}, timeout=5)
    assert part.status_code == 206 and part.content == whole.content[41:1001]
    assert part.headers["Content-Range"] == f"bytes 41-1000/{len(whole.content)}"
    bare = f"/calls/{call_sid}/recording.wav"
    assert requests.get(relay.url + bare, timeout=5).status_code == 401
    assert requests.get(relay.url + bare, headers=bearer(relay), timeout=5).content == whole.content


def test_delete_removes_recordings_and_transcript_and_is_logged(
    relay: RunningRelay, fake_twilio: FakeTwilio
) -> None:
    call_sid = place_call(relay, fake_twilio, "+14155550147")
    folder = relay.captures / call_sid
    assert (folder / "caller.wav").exists()
    gone = requests.delete(relay.url + f"/calls/{call_sid}", headers=bearer(relay), timeout=5)
    assert gone.status_code == 204 and not folder.exists()
    for path in (f"/calls/{call_sid}", f"/calls/{call_sid}/caller.wav"):
        assert requests.get(relay.url + path, headers=bearer(relay), timeout=5).status_code == 404
    listed = requests.get(relay.url + "/calls", headers=bearer(relay), timeout=5).json()
    assert call_sid not in [c["callSid"] for c in listed["calls"]]
    again = requests.delete(relay.url + f"/calls/{call_sid}", headers=bearer(relay), timeout=5)
    assert again.status_code == 404
    logged = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
    assert any(line["evt"] == "call_deleted" and line["callSid"] == call_sid for line in logged)


def test_a_live_call_is_listed_as_live_and_cannot_be_deleted(relay: RunningRelay) -> None:
    call_sid = new_sid("CA")
    observer = relay.observer(call_sid=call_sid)
    try:
        import threading

        player = threading.Thread(
            target=stream_call, args=(relay, call_audio(3), StreamOptions(speed=1), call_sid)
        )
        player.start()
        wait_for(lambda: call_sid in relay.get("/").json()["calls"])
        listed = requests.get(relay.url + "/calls", headers=bearer(relay), timeout=5).json()
        live = next(c for c in listed["calls"] if c["callSid"] == call_sid)
        assert live["live"] is True and live["status"] == "in-progress"
        refused = requests.delete(
            relay.url + f"/calls/{call_sid}", headers=bearer(relay), timeout=5
        )
        assert refused.status_code == 409
        player.join(30)
        assert observer.ended.wait(10)
    finally:
        observer.close()
    wait_for(lambda: call_sid not in relay.get("/").json()["calls"])
    after = requests.get(relay.url + f"/calls/{call_sid}", headers=bearer(relay), timeout=5)
    assert after.json()["live"] is False and after.json()["status"] == "ended"


def test_the_history_outlives_the_server(tmp_path: Path) -> None:
    first = start_relay(tmp_path, {"ASR_ENGINE": "off"})
    call_sid = new_sid("CA")
    try:
        stream_call(first, call_audio(2), StreamOptions(speed=0), call_sid)
        wait_until_ended(first, call_sid)
    finally:
        stop_relay(first)
    (first.captures / INDEX_FILE).unlink()  # lost too: rebuilt from the call folders
    second = start_relay(tmp_path, {"ASR_ENGINE": "off"})
    try:
        listed = requests.get(second.url + "/calls", headers=bearer(second), timeout=5).json()
        assert [c["callSid"] for c in listed["calls"]] == [call_sid]
        assert listed["calls"][0]["seconds"] == pytest.approx(2.0, abs=0.05)
    finally:
        stop_relay(second)


# The history itself, without a server.


IndexMaker = Callable[[], HistoryIndex]


@pytest.fixture(params=["sqlite", "postgres"])
def make_index(request: pytest.FixtureRequest, tmp_path: Path) -> IndexMaker:
    """Each backend of the index: SQLite beside the recordings, and PostgreSQL (a database of
    the test's own in the run's throwaway cluster)."""
    if request.param == "sqlite":
        return lambda: SqliteHistoryIndex(tmp_path / INDEX_FILE)
    url = request.getfixturevalue("postgres").new_database()
    return lambda: PostgresHistoryIndex(url)


def new_history(tmp_path: Path, make_index: IndexMaker | None = None) -> CallHistory:
    index = make_index() if make_index else SqliteHistoryIndex(tmp_path / INDEX_FILE)
    history = CallHistory(LocalCallFiles(tmp_path), index)
    history.open()
    return history


def listed(history: CallHistory, query: CallQuery) -> list[dict[str, Any]]:
    """What `GET /calls` lists once the index has caught up with what was written."""
    assert history.indexer.wait_indexed(30)
    return history.calls(query)


def a_call(history: CallHistory, started_at: float, to: str, words: str) -> str:
    call_sid = new_sid("CA")
    history.webhook(call_sid, {"From": "+14155550100", "To": to, "Direction": "inbound"})
    call = CallInfo(call_sid, new_sid("MZ"), "AC", ("inbound",), {}, started_at)
    history.call_started(call)
    (tmp_path_of(history) / call_sid / "transcript.jsonl").write_text(
        json.dumps({"speaker": "Caller", "text": words, "start": 0.5, "end": 1.0}) + "\n"
    )
    history.call_ended(call, "stop")
    history.transcription_ended(call)
    return call_sid


def tmp_path_of(history: CallHistory) -> Path:
    assert isinstance(history.files, LocalCallFiles)
    return history.files.root


def test_calls_are_listed_newest_first_in_pages_and_found_by_number_text_and_date(
    tmp_path: Path, make_index: IndexMaker
) -> None:
    history = new_history(tmp_path, make_index)
    day = 1_796_000_000.0
    old = a_call(history, day, "+442071234567", "I would like to cancel my order")
    middle = a_call(history, day + 3600, "+14155550199", "Where is my parcel?")
    new = a_call(history, day + 7200, "+14155550188", "Cancel it, 100% sure_now")

    def sids(query: CallQuery) -> list[str]:
        return [call["callSid"] for call in listed(history, query)]

    assert sids(CallQuery()) == [new, middle, old]
    page = listed(history, CallQuery(limit=2))
    assert [c["callSid"] for c in page] == [new, middle]
    assert sids(CallQuery(limit=2, before=page[-1]["startedAt"])) == [old]
    assert sids(CallQuery(number="5550188")) == [new]
    assert sids(CallQuery(number="+14155550100")) == [new, middle, old]  # the caller's
    assert sids(CallQuery(number="+44")) == [old]
    assert sids(CallQuery(text="CANCEL")) == [new, old]
    assert sids(CallQuery(text="100%")) == [new]  # % and _ are text, not wildcards
    assert sids(CallQuery(text="c_ncel")) == sids(CallQuery(text="1%0")) == []
    assert sids(CallQuery(since=day + 1, until=day + 7200)) == [middle]
    history.close()


def test_the_index_is_rebuilt_from_the_call_folders(tmp_path: Path) -> None:
    history = new_history(tmp_path)
    kept = a_call(history, time.time(), "+14155550111", "hello")
    before = listed(history, CallQuery())
    history.close()
    (tmp_path / INDEX_FILE).write_bytes(b"this is not a database")  # damaged: rebuilt too
    for suffix in ("-wal", "-shm"):
        (tmp_path / (INDEX_FILE + suffix)).unlink(missing_ok=True)
    rebuilt = new_history(tmp_path)
    assert listed(rebuilt, CallQuery()) == before and before[0]["callSid"] == kept
    assert listed(rebuilt, CallQuery(text="hello"))[0]["callSid"] == kept
    rebuilt.close()


def test_a_torn_last_line_from_a_crash_costs_only_that_line(tmp_path: Path) -> None:
    history = new_history(tmp_path)
    call_sid = a_call(history, time.time(), "+14155550112", "hi")
    with (tmp_path / call_sid / "call.jsonl").open("a") as file:
        file.write('{"event": "status", "callSt')
    call = history.call(call_sid)
    assert call is not None and call["to"] == "+14155550112" and call["status"] == "ended"
    history.close()


def test_a_call_whose_stream_never_came_says_so(tmp_path: Path) -> None:
    history = new_history(tmp_path)
    call_sid = new_sid("CA")
    history.webhook(call_sid, {"From": "+14155550100", "To": "+14155550101"})
    [call] = listed(history, CallQuery())
    assert call["callSid"] == call_sid and call["status"] == "no-stream"
    history.close()


def test_an_append_reads_only_what_the_log_gained_even_from_another_writer(
    tmp_path: Path, make_index: IndexMaker
) -> None:
    history = new_history(tmp_path, make_index)
    call_sid = a_call(history, time.time(), "+14155550113", "hello")
    files = LocalCallFiles(tmp_path)  # another process's writer, on the same folder
    files.append_line(call_sid, "call.jsonl", {"event": "status", "callStatus": "completed"})
    history.call_status({"callSid": call_sid, "callDuration": "7"})
    call = history.call(call_sid)
    assert call is not None and call["status"] == "completed" and call["twilioDuration"] == 7
    assert [e["event"] for e in call["events"]].count("status") == 2
    assert listed(history, CallQuery(text="hello"))[0]["status"] == "completed"
    history.close()
