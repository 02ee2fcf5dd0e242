"""The SQLite files the server processes of a host share (the history index, the webhook
outbox): a statement that waits for another process's write waits in an OS thread, so under
gevent, as `callrelay serve` runs, the event loop and every call's audio go on meanwhile."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HOLD_THE_WRITE_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
"""
"""Another process: takes the file's write lock, and gives it back when told."""

WRITE_WHILE_LOCKED = """
from gevent import monkey

monkey.patch_all()

import subprocess, sys
from pathlib import Path

import gevent

from callrelay.storage.index import CallRow
from callrelay.storage.sqlite_index import SqliteHistoryIndex
from callrelay.webhooks.events import WebhookEvent
from callrelay.webhooks.outbox import SqliteOutbox

kind, path, holder_script = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
if kind == "outbox":
    outbox = SqliteOutbox(path)
    outbox.backlog()
    event = WebhookEvent.new("call.started", "CA1", {"callSid": "CA1"})
    write = lambda: outbox.add(event, ["http://a.example/hooks"], "me", 1e12)
    written = lambda: outbox.backlog().pending == 1
else:
    index = SqliteHistoryIndex(path)
    index.open()
    write = lambda: index.record(CallRow("CA1", 1.0, 2.0, "inbound", "", "", "completed", 1.0, ""))
    written = lambda: index.known(["CA1"]) == {"CA1"}
holder = subprocess.Popen(
    [sys.executable, "-c", holder_script, str(path)],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
)
assert holder.stdout.readline().strip() == "locked"
writer = gevent.spawn(write)
gevent.sleep(0)  # the writer starts, and waits on the other process's lock
# Only if the writer's wait left the loop free does this run before SQLite gives up.
holder.stdin.write("release\\n")
holder.stdin.flush()
writer.get(timeout=30)
holder.wait(timeout=30)
assert written()
print("written")
"""


@pytest.mark.parametrize("kind", ["outbox", "index"])
def test_a_write_waiting_for_another_process_leaves_the_event_loop_free(
    tmp_path: Path, kind: str
) -> None:
    script = textwrap.dedent(WRITE_WHILE_LOCKED)
    path = tmp_path / f"{kind}.sqlite3"
    done = subprocess.run(
        [sys.executable, "-c", script, kind, str(path), HOLD_THE_WRITE_LOCK],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "written"
