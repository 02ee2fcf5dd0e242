"""Fixtures that run the real relay (`callrelay serve`) against the Twilio simulator."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from callrelay.simulator.audio_source import load_telephone_audio
from callrelay.simulator.fake_twilio import FakeTwilio
from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import StreamOptions
from tests.helpers import (
    ACCOUNT_SID,
    API_KEY,
    API_SECRET,
    APP_SID,
    AUTH_TOKEN,
    TWILIO_NUMBER,
    start_relay,
    synthetic_call,
)


@pytest.fixture(autouse=True)
def restore_callrelay_logging() -> Iterator[None]:
    logger = logging.getLogger("callrelay")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    for handler in logger.handlers:
        if handler not in handlers:
            handler.close()
    logger.handlers, logger.propagate, logger.level = handlers, propagate, level


@pytest.fixture(scope="module")
def fake_twilio() -> Iterator[FakeTwilio]:
    caller, receiver = synthetic_call()
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
            "TWILIO_APP_SID": APP_SID,
            "TWILIO_NUMBER": TWILIO_NUMBER,
            "TWILIO_API_BASE": fake_twilio.base_url,
            "PUBLIC_URL": "http://127.0.0.1:{port}",
        },
    )
    yield running
    stop_relay(running)
