"""Where a call's records are kept: its files and the index of every call.

Two interfaces, each with one implementation here, the way python-socketio's `PubSubManager`
takes Redis or Kafka:

- `CallFiles` (`files.py`): a call's stored files, by CallSid: its event log and transcript
  (JSON lines, appended), its recordings; read with byte ranges, listed, deleted. The first
  implementation is the local folder (`captures/<CallSid>/`), which the recorder writes live.
- `HistoryIndex` (`index.py`): one row per call for listing and search: record, query, forget.
  The first implementation is SQLite beside the recordings (`sqlite_index.py`).

The files are the source of truth; an index is rebuilt from them when it is missing.
"""
