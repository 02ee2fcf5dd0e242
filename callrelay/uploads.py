"""Storing each complete call's files in the object store (`RECORDINGS_URL`), resumably.

When a call is complete (its recordings final and, if it is transcribed, its last final out)
its folder is flagged for upload and queued. One background task uploads each of its files
that the store does not hold yet at its present size (a file that grew since, such as a call
log that a late status callback appended to, goes again), checks each upload's size, and
writes what is stored to a manifest beside the files. Only then, unless
`RECORDINGS_KEEP_LOCAL` says to keep them, are the local recordings removed: a recording is
never removed before the store confirmed it. The call's logs stay local (they are small, and
the history reads them first). A call whose completion waits on its upload is announced
(`call.completed`) once it is stored.

While the store is unreachable the queue waits and is tried again with a backoff, the outage
logged once each way; the flags outlive the process, so a relay killed mid-upload resumes at
its next start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from callrelay.background import start_task
from callrelay.call_queue import CallQueue
from callrelay.logs import log_event
from callrelay.outage import Outage
from callrelay.recording_formats import ENCODED_NAMES
from callrelay.storage.files import LocalCallFiles
from callrelay.storage.object_store import ObjectStore

logger = logging.getLogger("callrelay.uploads")

UPLOAD = "upload"
"""The flag of a call whose files are to be stored."""
ANNOUNCE = "announce"
"""The flag of a complete call to announce once it is stored."""
MANIFEST = ".stored.json"
"""Beside a call's files: each stored file's size, as the store confirmed it."""
FIRST_RETRY_SECONDS = 1.0
LAST_RETRY_SECONDS = 60.0


class CallUploader:
    def __init__(
        self,
        files: LocalCallFiles,
        store: ObjectStore,
        *,
        keep_local: bool,
    ) -> None:
        self._files = files
        self._store = store
        self._keep_local = keep_local
        self._announce: Callable[[str], None] = lambda call_sid: None
        self._queue = CallQueue()
        self._outage = Outage(
            logger,
            "recordings_store_unavailable",
            "recordings_store_back",
            "calls go on and are recorded; their files are stored when it is back",
        )
        self.uploaded_files = 0
        self.uploaded_bytes = 0
        self.failures = 0

    @property
    def backlog(self) -> int:
        return len(self._queue)

    @property
    def reachable(self) -> bool:
        return self._outage.up

    def start(self, announce: Callable[[str], None]) -> None:
        """Resume what the last run left, then store calls as they are queued; `announce`
        tells the world of a complete call once it is stored."""
        self._announce = announce
        for call_sid in self._files.flagged(UPLOAD):
            self._queue.put(call_sid)
        start_task("uploads", self._run)

    def store(self, call_sid: str, announce: bool = False) -> None:
        """Queue the call's files for storing (and its announcement once they are stored)."""
        with contextlib.suppress(OSError):  # a flag the disk refused: this run still stores it
            self._files.set_flag(call_sid, UPLOAD, True)
            if announce:
                self._files.set_flag(call_sid, ANNOUNCE, True)
        self._queue.put(call_sid)

    def changed(self, call_sid: str) -> None:
        """The call's files changed: store them again if they were stored (a late line in its
        log); a call not stored yet is stored when it is complete."""
        if (self._files.folder(call_sid) / MANIFEST).exists():
            self.store(call_sid)

    def wait_stored(self, timeout: float) -> bool:
        """Wait until every call queued so far is stored; False if `timeout` passed first."""
        return self._queue.wait_empty(timeout)

    def stop(self) -> None:
        self._queue.stop()

    def _run(self) -> None:
        wait = FIRST_RETRY_SECONDS
        while (taken := self._queue.take()) is not None:
            call_sid, _ = taken
            try:
                self.store_files(call_sid)
            except Exception as error:  # boto3's errors, or the disk's
                self.failures += 1
                self._outage.failed(error)
                self._queue.retry(call_sid, False, wait)
                wait = min(wait * 2, LAST_RETRY_SECONDS)
                continue
            self._outage.succeeded(backlog=len(self._queue))
            wait = FIRST_RETRY_SECONDS
            self._queue.done()

    def store_files(self, call_sid: str) -> None:
        """Store the call's files now, in the calling task (what the upload task does for each
        call it takes from the queue); raises while the store is unreachable."""
        folder = self._files.folder(call_sid)
        if not folder.is_dir():
            return  # deleted meanwhile
        manifest = _read_manifest(folder / MANIFEST)
        started = time.monotonic()
        sent = 0
        for file in self._files.files(call_sid):
            if manifest.get(file.name) == file.size:
                continue
            manifest[file.name] = self._store.upload(call_sid, file.name, folder / file.name)
            sent += file.size
            self.uploaded_files += 1
            self.uploaded_bytes += file.size
            _write_manifest(folder / MANIFEST, manifest)
        if not self._keep_local:
            for file in self._files.files(call_sid):
                if _is_recording(file.name) and manifest.get(file.name) == file.size:
                    (folder / file.name).unlink(missing_ok=True)
        self._files.set_flag(call_sid, UPLOAD, False)
        if sent:
            log_event(
                logger,
                "call_stored",
                callSid=call_sid,
                to=self._store.where,
                bytes=sent,
                seconds=round(time.monotonic() - started, 2),
            )
        if self._files.has_flag(call_sid, ANNOUNCE):
            self._announce(call_sid)
            self._files.set_flag(call_sid, ANNOUNCE, False)


def stored_sizes(folder: Path) -> dict[str, int]:
    """What the store holds of a local call folder, as its manifest says."""
    return _read_manifest(folder / MANIFEST)


def _is_recording(name: str) -> bool:
    return name.endswith(".wav") or name in ENCODED_NAMES


def _read_manifest(path: Path) -> dict[str, int]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _write_manifest(path: Path, manifest: dict[str, int]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(manifest))
    partial.replace(path)
