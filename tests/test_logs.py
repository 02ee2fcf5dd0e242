import json
import logging
import multiprocessing
from pathlib import Path

import pytest

from callrelay.logs import LOG_BACKUPS, LOG_MAX_BYTES, configure_logging, log_event


def test_events_are_json_lines_with_utc_timestamps_and_secrets_redacted(tmp_path: Path) -> None:
    log_file = tmp_path / "media.log"
    configure_logging(log_file, "INFO", ["s3cr3t-token"])
    logger = logging.getLogger("callrelay.test")
    log_event(logger, "call_started", callSid="CA1", note="token s3cr3t-token here")
    logger.warning("plain message with s3cr3t-token")
    log_event(logger, "frame", logging.DEBUG, n=1)  # below the level: not written
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [line["evt"] for line in lines] == ["call_started", "log"]
    assert lines[0]["callSid"] == "CA1" and lines[0]["ts"].endswith("Z")
    assert "s3cr3t-token" not in log_file.read_text()
    assert "[redacted]" in lines[0]["note"]


def test_log_file_rotates_at_8_mb_keeping_4_backups(tmp_path: Path) -> None:
    configure_logging(tmp_path / "media.log", "INFO", [])
    handler = next(
        h
        for h in logging.getLogger("callrelay").handlers
        if isinstance(h, logging.handlers.RotatingFileHandler)
    )
    assert handler.maxBytes == LOG_MAX_BYTES == 8 * 1024 * 1024
    assert handler.backupCount == LOG_BACKUPS == 4


def _write_lines(worker: int, count: int) -> None:
    logger = logging.getLogger("callrelay.test")
    for n in range(count):
        log_event(logger, "line", worker=worker, n=n, padding="x" * 60)


def test_processes_sharing_the_log_rotate_it_without_losing_or_tearing_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("callrelay.logs.LOG_MAX_BYTES", 30_000)
    log_file = tmp_path / "media.log"
    configure_logging(log_file, "INFO", [], processes=3)  # in the parent, as gunicorn's master
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_lines, args=(w, 250)) for w in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    files = [log_file, *(log_file.with_name(f"media.log.{n}") for n in range(1, LOG_BACKUPS + 1))]
    lines = [
        json.loads(line)
        for file in files
        if file.exists()
        for line in file.read_text().splitlines()
    ]
    line_bytes = 200
    assert len(files) > 2
    assert all(f.stat().st_size <= 30_000 + line_bytes for f in files if f.exists())
    assert sorted((line["worker"], line["n"]) for line in lines) == [
        (w, n) for w in range(3) for n in range(250)
    ]
