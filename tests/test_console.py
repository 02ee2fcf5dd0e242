"""The console in a real browser (Debian's headless Chromium, driven by Playwright): sign in,
watch a call placed through the Twilio simulator with both sides' words in their columns,
listen to it, hang it up, play a finished call's recording, talk into a call, and keep up with
50 live calls. Screenshots go to `artifacts/console/`."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from callrelay.access import generate_token
from callrelay.simulator.fake_twilio import FakeTwilio
from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import StreamOptions, new_sid
from tests.helpers import (
    call_audio,
    calling_settings,
    simulated_twilio,
    start_relay,
    stream_call,
    wait_for,
)
from tests.postgres import PostgresServer
from tests.receiver import Answer, WebhookReceiver, new_secret
from tests.s3_server import S3Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("CALLRELAY_ARTIFACTS", "artifacts")) / "console"
SLOW = 60_000
"""ms: what waits on speech recognition may take on a busy 2-core machine."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM, "the browser tests need Chromium: apt-get install chromium"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def twilio() -> Iterator[FakeTwilio]:
    """Calls of the synthetic two-party conversation, 14 s, in real time."""
    fake = simulated_twilio(seconds=14, speed=1)
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory, twilio: FakeTwilio) -> Iterator[RunningRelay]:
    running = start_relay(
        tmp_path_factory.mktemp("console"), {"ASR_ENGINE": "whisper", **calling_settings(twilio)}
    )
    yield running
    stop_relay(running)


def open_console(browser: Browser, relay: RunningRelay) -> Page:
    page = browser.new_page(viewport={"width": 1360, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(relay.url + "/console")
    return page


def sign_in(page: Page, token: str) -> None:
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def signed_in(browser: Browser, relay: RunningRelay) -> Page:
    page = open_console(browser, relay)
    sign_in(page, relay.api_token)
    expect(page.locator("#link-text")).to_have_text("live")
    return page


def place_call(page: Page, to: str, bridge_to: str = "", talk: bool = False) -> None:
    page.get_by_role("button", name="Place a call").click()
    page.get_by_label("To", exact=True).fill(to)
    page.get_by_label("Bridge to (optional)").fill(bridge_to)
    if talk:
        page.get_by_label("Talk into the call").check()
    page.get_by_role("button", name="Place call").click()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def plays_from(page: Page, seconds: float, seek_to: float) -> None:
    """The first recording's player knows its length, seeks to `seek_to` and plays on from
    there (a stored file served in byte ranges)."""
    page.wait_for_function("() => document.querySelector('.recording audio').readyState >= 1")
    duration = page.evaluate("document.querySelector('.recording audio').duration")
    assert duration == pytest.approx(seconds, abs=0.1)
    page.evaluate(
        """(to) => new Promise((seeked) => {
            const audio = document.querySelector('.recording audio');
            audio.onseeked = seeked;
            audio.currentTime = to;
        })""",
        seek_to,
    )
    page.evaluate("document.querySelector('.recording audio').play()")
    page.wait_for_function(
        "(to) => document.querySelector('.recording audio').currentTime > to + 0.2", arg=seek_to
    )


def no_page_errors(page: Page) -> None:
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_wrong_token_is_refused_and_the_right_one_signs_in(
    browser: Browser, relay: RunningRelay
) -> None:
    page = open_console(browser, relay)
    shot(page, "1-sign-in")
    sign_in(page, "not-the-token-at-all")
    expect(page.get_by_role("alert")).to_have_text("That token is not this relay's API token.")
    expect(page.locator("#app")).to_be_hidden()
    sign_in(page, relay.api_token)
    expect(page.locator("#link-text")).to_have_text("live")
    assert page.evaluate("sessionStorage.getItem('callrelay.token')") == relay.api_token
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('callrelay.token')") is None
    no_page_errors(page)
    page.close()


def test_a_call_placed_from_the_console_is_seen_heard_and_hung_up(
    browser: Browser, relay: RunningRelay, twilio: FakeTwilio
) -> None:
    page = signed_in(browser, relay)
    place_call(page, "+14155550160", bridge_to="+14155550170")  # the receiver speaks too
    row = page.locator("#call-list .call-item")
    expect(row).to_have_count(1, timeout=15_000)
    expect(row).to_contain_text("+15005550006 → +14155550160")
    parties = row.locator(".parties")
    assert parties.evaluate("e => e.scrollWidth <= e.clientWidth")  # both numbers shown whole
    # Nothing was open: the new call opens itself, its listen buttons labelled as such.
    expect(page.locator("#call")).to_be_visible()
    expect(row).to_have_class(re.compile("selected"))
    expect(page.get_by_text("Listen", exact=True)).to_be_visible()
    # Listening and the meters first, while the call surely runs (words may come later than
    # its end on a busy machine).
    page.get_by_role("group", name="Listen").get_by_role("button", name="Both").click()
    page.wait_for_function(
        "() => { const l = window.callrelayConsole.listen;"
        " return l.sent > 16000 && l.played > 8000; }",
        timeout=15_000,
    )
    page.wait_for_function("() => window.callrelayConsole.levels.inbound > 0.2")
    # The synthetic call: the caller asks about an order; the receiver: "can you give me..."
    expect(page.locator(".line.caller:not(.partial) .text").first).to_contain_text(
        "order", timeout=SLOW
    )
    expect(page.locator(".line.receiver:not(.partial) .text").first).to_contain_text(
        "give me", timeout=SLOW
    )
    shot(page, "2-live-call")
    # Pausing for card details: the relay confirms, and the console says so until resumed.
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#pause")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#timeline")).to_contain_text("paused")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#pause")).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#timeline")).to_contain_text("resumed")
    call_sid = page.evaluate("window.callrelayConsole.selected")
    page.get_by_role("button", name="Hang up").click()
    assert twilio.wait_for_call(call_sid).done.wait(15)
    expect(page.locator("#live-count")).to_have_text("0", timeout=15_000)
    expect(page.locator("#timeline")).to_contain_text("completed")
    no_page_errors(page)
    page.close()


def test_a_finished_call_plays_its_recording_is_found_and_can_be_deleted(
    browser: Browser, relay: RunningRelay
) -> None:
    call_sid = new_sid("CA")
    stream_call(relay, call_audio(6), StreamOptions(speed=0), call_sid)
    wait_for(lambda: "analytics" in relay.get_with_token(f"/calls/{call_sid}").json(), timeout=60)
    page = signed_in(browser, relay)
    page.get_by_role("tab", name="History").click()
    row = page.locator(f"#call-list .call-item[data-call-sid='{call_sid}']")
    row.click()
    # Who spoke when: each side's talk time, and a lane of its speech over the call.
    expect(page.get_by_role("region", name="Who spoke when")).to_be_visible()
    expect(page.locator("#talk-caller")).to_have_text(re.compile(r"^\d\.\d s \(\d+%\)$"))
    expect(page.locator("#speech-picture rect.caller").first).to_be_attached()
    assert page.locator("#speech-picture rect.receiver").count() >= 1
    audio = page.locator(".recording audio")
    expect(audio).to_have_count(3)  # both sides in stereo, then each side
    expect(page.locator(".recording .name span").first).to_have_text("Both sides (stereo) · 00:06")
    page.wait_for_function("() => document.querySelectorAll('.recording audio')[0].readyState >= 1")
    assert page.evaluate("document.querySelector('.recording audio').duration") == pytest.approx(
        6.0, abs=0.1
    )
    page.evaluate("document.querySelector('.recording audio').play()")
    page.wait_for_function("() => document.querySelector('.recording audio').currentTime > 0.3")
    expect(page.locator(".line.caller .text").first).to_contain_text("order")
    with page.expect_download() as download:
        page.get_by_role("link", name="WebVTT").click()
    assert download.value.suggested_filename == f"{call_sid}-transcript.vtt"
    saved = Path(download.value.path()).read_text()
    assert saved.startswith("WEBVTT\n") and re.search(r"<v Caller>.*order", saved), saved
    cues = page.evaluate(
        """async (src) => {
            const video = document.createElement("video"), track = document.createElement("track");
            Object.assign(track, { kind: "captions", default: true, src });
            video.append(track);
            document.body.append(video);
            track.track.mode = "hidden";
            await new Promise((loaded, failed) => {
                track.onload = loaded;
                track.onerror = () => failed(new Error("the browser refused the WebVTT"));
            });
            const parsed = [...track.track.cues];
            video.remove();
            return parsed.map((cue) => [cue.startTime, cue.getCueAsHTML().textContent]);
        }""",
        page.locator("#transcript-vtt").get_attribute("href"),
    )
    assert cues and cues[0][0] == pytest.approx(0.6, abs=0.5) and "order" in cues[0][1], cues
    shot(page, "3-finished-call")

    page.get_by_placeholder("Number or words said").fill("order")
    expect(row).to_be_visible()
    page.get_by_placeholder("Number or words said").fill("no call says this")
    expect(row).to_have_count(0)
    found = page.get_by_text("No calls found.")
    expect(found).to_be_visible()  # at the top of the list, under the search box
    box, search = found.bounding_box(), page.locator("#history-search").bounding_box()
    assert box and search and box["y"] - (search["y"] + search["height"]) < 40
    page.get_by_placeholder("Number or words said").fill("")
    page.on("dialog", lambda dialog: dialog.accept())
    row.click()
    page.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    assert not (relay.captures / call_sid).exists()
    no_page_errors(page)
    page.close()


def test_typed_words_are_spoken_into_a_talk_call_and_stop_stops_them(
    browser: Browser, relay: RunningRelay, twilio: FakeTwilio
) -> None:
    page = signed_in(browser, relay)
    place_call(page, "+14155550161", talk=True)
    page.locator("#call-list .call-item").first.click()
    expect(page.get_by_role("heading", name="Talk into the call")).to_be_visible()
    page.get_by_placeholder("Type what to say").fill("Hello, this is the relay speaking.")
    page.get_by_role("button", name="Say").click()
    expect(page.locator("#talk-note")).to_contain_text("Playing “Hello, this is the relay")
    expect(page.locator("#timeline")).to_contain_text("played", timeout=15_000)
    page.get_by_placeholder("Type what to say").fill(
        "This sentence is long enough to be cut off before its end by the stop button."
    )
    page.get_by_role("button", name="Say").click()
    expect(page.locator("#talk-note")).to_contain_text("Playing")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#talk-note")).to_have_text("Stopped.")
    expect(page.locator("#timeline")).to_contain_text("(cut off)")
    shot(page, "4-talk")
    call_sid = page.evaluate("window.callrelayConsole.selected")
    page.get_by_role("button", name="Hang up").click()
    call = twilio.wait_for_call(call_sid)
    assert call.done.wait(15)
    assert call.report is not None and call.report.talkback is not None
    assert len(call.report.talkback.audio) > 8000  # more than a second of speech reached it
    assert call.report.talkback.marks_echoed == ["clip-1"] and call.report.warnings == []
    no_page_errors(page)
    page.close()


def test_calling_from_the_browser_gets_a_voice_sdk_token_and_loads_the_sdk(
    browser: Browser, relay: RunningRelay
) -> None:
    page = signed_in(browser, relay)
    page.get_by_role("button", name="Place a call").click()
    page.get_by_label("To", exact=True).fill("+14155550162")
    page.get_by_role("button", name="Call from browser").click()
    page.wait_for_function("() => typeof window.Twilio?.Device === 'function'")
    # Twilio is out of reach from here: the SDK tries to connect with the token, fails, and
    # the page says so.
    page.wait_for_function(
        "() => window.callrelayConsole.browserCall?.state === 'failed'", timeout=30_000
    )
    expect(page.locator("#toast")).to_contain_text("The browser call failed")
    logged = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
    assert any(line["evt"] == "voice_token_issued" for line in logged)
    page.close()


def test_fifty_live_calls_are_listed_and_each_can_be_opened(
    browser: Browser, tmp_path: Path
) -> None:
    busy = start_relay(tmp_path, {"ASR_ENGINE": "off"})
    calls = [new_sid("CA") for _ in range(50)]
    hang_up = threading.Event()
    players = [
        threading.Thread(
            target=stream_call,
            args=(busy, call_audio(30), StreamOptions(speed=1), call_sid),
            kwargs={"hang_up": hang_up},
        )
        for call_sid in calls
    ]
    try:
        page = signed_in(browser, busy)
        for player in players:
            player.start()
        expect(page.locator("#call-list .call-item")).to_have_count(50, timeout=30_000)
        expect(page.locator("#live-count")).to_have_text("50")
        page.locator(f".call-item[data-call-sid='{calls[37]}']").click()
        expect(page.locator("#call-meta")).to_contain_text(calls[37])
        page.wait_for_function("() => window.callrelayConsole.levels.inbound > 0.2")
        page.get_by_role("group", name="Listen").get_by_role("button", name="Caller").click()
        page.wait_for_function("() => window.callrelayConsole.listen.played > 8000")
        shot(page, "5-fifty-calls")
        no_page_errors(page)
        page.close()
    finally:
        hang_up.set()
        for player in players:
            player.join(30)
        stop_relay(busy)


def test_the_console_opens_at_the_address_the_relay_prints_with_the_default_port(
    browser: Browser, tmp_path: Path
) -> None:
    """Browsers refuse port 6000 (X11's, on the Fetch standard's list of bad ports), the
    relay's default: the same server also listens on the console's port, and says so."""
    relay = start_relay(tmp_path, {"ASR_ENGINE": "off"}, port=6000)
    try:
        printed = re.search(r"console +(http://\S+)", relay.server_output())
        assert printed, relay.server_output()
        assert printed.group(1) == "http://127.0.0.1:6080/console"
        refused = browser.new_page()
        with pytest.raises(PlaywrightError, match="ERR_UNSAFE_PORT"):
            refused.goto(relay.url + "/console")
        refused.close()  # its error page may still be loading: the console gets a page of its own
        page = browser.new_page()
        page.goto(printed.group(1))
        sign_in(page, relay.api_token)
        expect(page.locator("#link-text")).to_have_text("live")
        # No Twilio settings here: the page says calling is off and how to try it anyway.
        expect(page.get_by_role("button", name="Place a call")).to_be_disabled()
        expect(page.locator("#calling-note")).to_contain_text("callrelay simulate rest")
        assert relay.get("/").json()["status"] == "ok"  # and 6000 serves everything else
        page.close()
    finally:
        stop_relay(relay)


def test_failing_webhooks_show_in_a_banner_until_the_receiver_takes_them(
    browser: Browser, tmp_path: Path
) -> None:
    receiver = WebhookReceiver(new_secret())
    receiver.answer = lambda _: Answer(503)
    relay = start_relay(
        tmp_path,
        {"ASR_ENGINE": "off", "WEBHOOK_URL": receiver.url, "WEBHOOK_SECRET": receiver.secret},
    )
    try:
        page = signed_in(browser, relay)
        expect(page.locator("#webhook-alert")).to_be_hidden()
        call_sid = new_sid("CA")
        stream_call(relay, call_audio(1), StreamOptions(speed=0), call_sid)
        alert = page.get_by_role("alert").filter(has_text="Webhooks failing")
        expect(alert).to_contain_text("1 of 1 receiver", timeout=30_000)
        expect(alert).to_contain_text("waiting in the outbox")
        receiver.answer = lambda _: Answer()
        receiver.wait_for_call(call_sid)
        expect(alert).to_be_hidden(timeout=30_000)
        no_page_errors(page)
        page.close()
    finally:
        stop_relay(relay)
        receiver.stop()


@pytest.mark.parametrize("kept_as", ["flac", "opus"])
def test_a_call_kept_compressed_plays_and_seeks_in_the_browser(
    browser: Browser, tmp_path: Path, kept_as: str
) -> None:
    relay = start_relay(tmp_path, {"ASR_ENGINE": "off", "RECORDINGS_FORMAT": kept_as})
    try:
        call_sid = new_sid("CA")
        stream_call(relay, call_audio(4), StreamOptions(speed=0), call_sid)
        wait_for(lambda: "analytics" in relay.get_with_token(f"/calls/{call_sid}").json())
        page = signed_in(browser, relay)
        page.get_by_role("tab", name="History").click()
        page.locator(f"#call-list .call-item[data-call-sid='{call_sid}']").click()
        expect(page.locator(".recording audio")).to_have_count(1)  # only the stereo file
        expect(page.locator(".recording .name span")).to_have_text("Both sides (stereo) · 00:04")
        plays_from(page, seconds=4.0, seek_to=2.5)
        href = page.locator(".recording a[download]").get_attribute("href")
        assert href and f"recording.{kept_as}" in href
        no_page_errors(page)
        page.close()
    finally:
        stop_relay(relay)


def test_the_console_on_one_host_lists_and_plays_a_call_another_host_took(
    browser: Browser, tmp_path: Path, postgres: PostgresServer, s3: S3Server
) -> None:
    shared = {
        "ASR_ENGINE": "off",
        "DATABASE_URL": postgres.new_database(),
        **s3.env(s3.new_bucket()),
    }
    token = generate_token()
    a = start_relay(tmp_path / "a", shared, api_token=token)
    b = start_relay(tmp_path / "b", shared, api_token=token)
    try:
        call_sid = new_sid("CA")
        observer = a.observer(call_sid=call_sid, audio=False)
        stream_call(a, call_audio(4), StreamOptions(speed=0), call_sid)
        assert observer.completed.wait(60)  # stored, and removed from A's folder
        observer.close()
        page = signed_in(browser, b)
        page.get_by_role("tab", name="History").click()
        page.locator(f"#call-list .call-item[data-call-sid='{call_sid}']").click()
        expect(page.locator(".recording audio")).to_have_count(3)
        plays_from(page, seconds=4.0, seek_to=3.0)
        no_page_errors(page)
        page.close()
    finally:
        stop_relay(a)
        stop_relay(b)
