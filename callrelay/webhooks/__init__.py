"""Each call's events posted to the user's systems as Standard Webhooks, from a durable outbox.

`events.py` says what is sent (pure), `outbox.py` keeps it until it is delivered (the
`Outbox` interface; SQLite beside the recordings first), `delivery.py` posts it, signed, with
retries, and `sink.py` turns a call's events into webhook events as they happen.
"""
