"""The webhook outbox: a call's events to one receiver form a chain tried in order, only its
head is due; deliveries are owned by one process, and taken over when it is gone."""

from __future__ import annotations

from pathlib import Path

from callrelay.webhooks.events import WebhookEvent
from callrelay.webhooks.outbox import SqliteOutbox

A, B = "http://a.example/hooks", "http://b.example/hooks"


def event(call: str, kind: str = "call.started") -> WebhookEvent:
    return WebhookEvent.new(kind, call, {"callSid": call})


def test_only_the_head_of_each_call_and_receiver_chain_is_due(tmp_path: Path) -> None:
    outbox = SqliteOutbox(tmp_path / "outbox.sqlite3")
    first, second = event("CA1"), event("CA1", "call.ended")
    outbox.add(first, [A, B], "me", 100.0)
    outbox.add(second, [A, B], "me", 100.0)
    outbox.add(event("CA2"), [A], "me", 100.0)
    now = first.created_at + 1
    due = outbox.due("me", now, 10, set())
    assert sorted((d.call_sid, d.url, d.event_type) for d in due) == [
        ("CA1", A, "call.started"),
        ("CA1", B, "call.started"),
        ("CA2", A, "call.started"),
    ]
    head = next(d for d in due if d.call_sid == "CA1" and d.url == A)
    outbox.retry(head.id, now + 60, "503")  # waiting: its chain waits with it
    assert {(d.call_sid, d.url) for d in outbox.due("me", now, 10, set())} == {
        ("CA1", B),
        ("CA2", A),
    }
    assert outbox.next_due_at("me") is not None
    outbox.finished(head.id)  # given up: the next event of the chain is its head
    after = [d for d in outbox.due("me", now, 10, set()) if d.url == A and d.call_sid == "CA1"]
    assert [d.event_id for d in after] == [second.id] and after[0].attempts == 0
    assert outbox.due("me", now, 10, {d.id for d in after}) == [
        d for d in outbox.due("me", now, 10, set()) if d.id != after[0].id
    ]
    assert outbox.backlog().pending == 4


def test_a_gone_owners_deliveries_are_taken_over(tmp_path: Path) -> None:
    outbox = SqliteOutbox(tmp_path / "outbox.sqlite3")
    outbox.add(event("CA1"), [A], "old", lease_until=50.0)
    outbox.add(event("CA2"), [A], "other", lease_until=500.0)
    assert outbox.due("new", 1e12, 10, set()) == []  # not ours
    assert outbox.renew("new", lease_until=400.0, now=100.0) == 1  # old's lease ran out
    assert [d.call_sid for d in outbox.due("new", 1e12, 10, set())] == ["CA1"]
    assert outbox.owners() == {"new", "other"}
    assert outbox.take_over("other", "new", 400.0) == 1
    assert {d.call_sid for d in outbox.due("new", 1e12, 10, set())} == {"CA1", "CA2"}


def test_the_outbox_is_the_same_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = SqliteOutbox(path)
    kept = event("CA1")
    outbox.add(kept, [A], "me", 100.0)
    outbox.close()
    reopened = SqliteOutbox(path)
    (delivery,) = reopened.due("me", kept.created_at + 1, 10, set())
    assert delivery.event_id == kept.id and delivery.body == kept.body()
    assert reopened.backlog().oldest_created_at == kept.created_at
