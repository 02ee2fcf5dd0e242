"""Fixtures that run the real relay (`callrelay serve`) against the Twilio simulator."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from callrelay.simulator.fake_twilio import FakeTwilio
from callrelay.simulator.local_relay import RunningRelay, free_port, stop_relay
from tests.helpers import RedisServer, calling_settings, simulated_twilio, start_relay
from tests.postgres import PostgresServer
from tests.s3_server import S3Server


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
    fake = simulated_twilio(seconds=6, speed=0)
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def relay(
    tmp_path_factory: pytest.TempPathFactory, fake_twilio: FakeTwilio
) -> Iterator[RunningRelay]:
    tmp = tmp_path_factory.mktemp("relay")
    running = start_relay(tmp, {"ASR_ENGINE": "off", **calling_settings(fake_twilio)})
    yield running
    stop_relay(running)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway cluster for the run (each test takes a database of its own). Not under
    pytest's temporary folder: that is private to this user, and the cluster may run as
    `postgres`."""
    folder = Path(tempfile.mkdtemp(prefix="callrelay-postgres-"))
    server = PostgresServer(folder).create()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """One S3-compatible server for the run (each test takes a bucket of its own)."""
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, on a free loopback port."""
    server = RedisServer(free_port()).start()
    yield server
    server.kill()
