"""Where a call's records are kept: its files and the index of every call.

Two interfaces, each with one implementation here, the way python-socketio's `PubSubManager`
takes Redis or Kafka:

- `CallFiles` (`files.py`): a call's stored files, by CallSid: its event log and transcript
  (JSON lines, appended), its recordings; read with byte ranges, listed, deleted. The first
  implementation is the local folder (`captures/<CallSid>/`), which the recorder writes live.
- `HistoryIndex` (`index.py`): one row per call for listing and search: migrate, record,
  known, query, forget. SQLite beside the recordings (`sqlite_index.py`) is the default;
  PostgreSQL (`postgres_index.py`) is shared by every host.

The files are the source of truth: the index is written from them (`indexing.IndexWriter`),
and any call it lacks is written again.
"""
