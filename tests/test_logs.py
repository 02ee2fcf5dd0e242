import json
import logging
from pathlib import Path

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
