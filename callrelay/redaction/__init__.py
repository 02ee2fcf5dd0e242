"""Redaction (`REDACT=pci|pii`): sensitive numbers and words masked before a transcript leaves
the recognition step, so every output (Socket.IO, transcript.jsonl, the history and its
search, exports, webhooks, object storage, the log) sees only the masked text.

`spoken.py` reads the digits in a transcript however they were said; `track.py` is one track's
redactor, which holds a final ending in digits until the number it may begin is complete.
"""
