"""Who may place calls and listen to them: one API token, allow-listed destinations, a rate.

Secure by default, the way Jupyter is: without RELAY_API_TOKEN the server makes a random token
at start, prints it once on the console (never into media.log) and, once the server listens,
writes it to `.callrelay-token` (readable by its owner only; `.callrelay-token-PORT` for any
port but 6000, so two relays in one folder keep their own) for the simulator to find.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path

from itsdangerous import URLSafeTimedSerializer

DEFAULT_PORT = 6000


def token_file(port: int) -> Path:
    """Where the token of a relay on `port` is saved."""
    return Path(".callrelay-token" if port == DEFAULT_PORT else f".callrelay-token-{port}")


def generate_token() -> str:
    return secrets.token_urlsafe(24)


def write_token_file(token: str, path: Path) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    os.chmod(path, 0o600)


def read_token_file(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class ApiToken:
    """The token that places calls and listens. None is a locked door: nothing matches it
    (a relay built without one; `callrelay serve` always makes one it can print)."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None
        self._key = self._token or secrets.token_bytes(32)

    def matches(self, candidate: object) -> bool:
        if self._token is None or not isinstance(candidate, str) or not candidate:
            return False
        return hmac.compare_digest(candidate.encode(), self._token)

    def matches_bearer(self, authorization: str | None) -> bool:
        scheme, _, value = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and self.matches(value.strip())

    def signer(self, purpose: str) -> URLSafeTimedSerializer:
        """Signs values (a recording's URL) that only this token's holder could have made."""
        return URLSafeTimedSerializer(self._key, salt=f"callrelay-{purpose}")


class RateLimit:
    """At most `count` events in any `seconds`-long window (sliding)."""

    def __init__(self, count: int, seconds: float = 60.0) -> None:
        self.count = count
        self.seconds = seconds
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def allow(self) -> float:
        """0 if allowed (and counted); else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            while self._times and now - self._times[0] >= self.seconds:
                self._times.popleft()
            if len(self._times) >= self.count:
                return self.seconds - (now - self._times[0])
            self._times.append(now)
            return 0.0


def destination_allowed(number: str, prefixes: list[str]) -> bool:
    return not prefixes or any(number.startswith(prefix) for prefix in prefixes)
