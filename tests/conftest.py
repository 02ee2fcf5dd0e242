"""Fixtures that run the real relay (`python app.py`) against the Twilio simulator."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from callrelay.simulator import local_relay
from callrelay.simulator.audio_source import default_call_audio, load_telephone_audio
from callrelay.simulator.fake_twilio import FakeTwilio
from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import StreamOptions

ACCOUNT_SID = "AC" + "5" * 32
AUTH_TOKEN = "test-auth-token-0123456789"
API_KEY = "SK" + "6" * 32
API_SECRET = "test-api-secret-abcdef"
TWILIO_NUMBER = "+15005550006"
RELAY_TOKEN = "test-relay-api-token-0123456789"

start_relay = partial(local_relay.start_relay, api_token=RELAY_TOKEN)
"""The relay as `python app.py`, with the token the tests know."""


@pytest.fixture(autouse=True)
def restore_callrelay_logging() -> Iterator[None]:
    logger = logging.getLogger("callrelay")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    for handler in logger.handlers:
        if handler not in handlers:
            handler.close()
    logger.handlers, logger.propagate, logger.level = handlers, propagate, level


def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    """Poll until `predicate()` holds; fail the test when `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def fake_twilio() -> Iterator[FakeTwilio]:
    caller, receiver = default_call_audio()
    fake = FakeTwilio(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        api_key=API_KEY,
        api_secret=API_SECRET,
        caller_audio=load_telephone_audio(caller)[: 8000 * 6],
        receiver_audio=load_telephone_audio(receiver)[: 8000 * 6],
        stream_options=StreamOptions(speed=0),
    ).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def relay(
    tmp_path_factory: pytest.TempPathFactory, fake_twilio: FakeTwilio
) -> Iterator[RunningRelay]:
    tmp = tmp_path_factory.mktemp("relay")
    running = start_relay(
        tmp,
        {
            "ASR_ENGINE": "off",
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_API_KEY": API_KEY,
            "TWILIO_API_SECRET": API_SECRET,
            "TWILIO_NUMBER": TWILIO_NUMBER,
            "TWILIO_API_BASE": fake_twilio.base_url,
            "PUBLIC_URL": "http://127.0.0.1:{port}",
        },
    )
    yield running
    stop_relay(running)
