"""Settings: read once at start from the environment and `.env`, typed and validated.

A wrong value stops the server with a message that names the variable. No Twilio setting is
required: the relay, the recordings and the simulator work without any; only placing calls needs
credentials, and `calling_missing()` says which.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from callrelay.keyterms import keyterm_list
from callrelay.webhooks.events import DEFAULT_EVENT_TYPES, EVENT_TYPES

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


SID_PREFIXES = {"twilio_account_sid": "AC", "twilio_api_key": "SK", "twilio_app_sid": "AP"}


def is_e164(number: str) -> bool:
    return bool(E164.match(number))


BROWSER_BLOCKED_PORTS = frozenset(
    # The Fetch standard's "bad ports": every browser refuses to open these (ERR_UNSAFE_PORT).
    # 6000, the relay's default, is X11's.
    (1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101,
     102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389,
     427, 465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636,
     989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566,
     6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080)
)  # fmt: skip
CONSOLE_PORT_OFFSET = 80
"""With CONSOLE_PORT=auto and a PORT browsers refuse, the console's port is PORT + 80."""

DEFAULT_MAX_CALLS = 120
"""Streams one server process takes at once; past it a stream is refused, so that the calls it
carries keep their latency (`callrelay bench relay --ramp` measures what a machine carries)."""


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the variable."""


def _optional_str(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        return None
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_number: str | None = None
    twilio_app_sid: str | None = None
    twilio_api_key: str | None = None
    twilio_api_secret: SecretStr | None = None
    voice_mode: Literal["listen", "talk"] = "listen"
    """Inbound calls to the number: `listen` streams both sides (`<Start>`, then `FORWARD_TO`);
    `talk` streams the caller bidirectionally (`<Connect>`), so clients can talk back."""
    voice_token_ttl_seconds: Annotated[int, Field(ge=60, le=86_400)] = 3600
    """How long a browser's Voice SDK token (`GET /token`) lasts."""
    public_url: str | None = None
    forward_to: str | None = None
    twilio_api_base: str = "https://api.twilio.com"

    captures_dir: Path = Path("captures")
    recordings_url: str | None = None
    """`s3://bucket/prefix`: each complete call's files are stored there (any S3-compatible
    store, through boto3 and the standard AWS variables); none: the local folder only."""
    recordings_keep_local: bool = False
    """With RECORDINGS_URL: keep the local recordings once stored (by default they are removed
    once the store has confirmed them; the call's logs stay)."""
    retention_days: Annotated[float, Field(gt=0, le=36_500)] | None = None
    """Calls older than this are deleted everywhere (object store, folder, index); none: kept
    for ever."""
    recordings_format: Literal["wav", "flac", "opus"] = "wav"
    """How a complete call's recordings are kept: mono WAVs, or one stereo FLAC or Opus."""
    log_file: Path = Path("media.log")
    log_level: str = "INFO"
    host: str = "0.0.0.0"
    port: Annotated[int, Field(ge=1, le=65535)] = 6000
    console_port: str = "auto"
    """A second port the same server listens on, for browsers: `auto` (PORT + 80 when PORT is
    one browsers refuse, as 6000 is; else none), a port number, or 0 for none."""
    cors_allowed_origins: str = "*"
    relay_api_token: SecretStr | None = None
    allowed_destinations: str = ""
    make_call_limit: Annotated[int, Field(ge=1, le=100000)] = 10
    stream_max_messages_per_second: Annotated[int, Field(ge=100, le=1_000_000)] = 1000
    stream_idle_timeout_seconds: Annotated[float, Field(ge=1, le=3600)] = 60.0
    max_calls: Annotated[int, Field(ge=1, le=100_000)] = DEFAULT_MAX_CALLS
    metrics_public: bool = False
    """`GET /metrics` without the API token (for a Prometheus on a private network)."""
    workers: str = "1"
    """Server processes behind the one port: a number, or `auto` for one per core."""
    redis_url: str | None = None
    database_url: SecretStr | None = None
    """`postgresql://user:password@host:5432/db`: the history index in PostgreSQL, shared by
    every process and host; none: SQLite beside the recordings."""

    asr_engine: Literal["auto", "whisper", "vosk", "off"] = "auto"
    whisper_model: str | None = None
    whisper_beam_size: Annotated[int, Field(ge=1, le=10)] = 5
    endpoint_silence_seconds: Annotated[float, Field(ge=0.1, le=5)] = 0.4
    """Whisper: the pause that ends an utterance (the segmenter's `min_silence`)."""
    redact: Literal["off", "pci", "pii"] = "off"
    """Mask card numbers (`pci`), and SSNs, phone numbers and emails too (`pii`), in every
    output, before anything hears a transcript."""
    asr_keyterms: str = ""
    """Names, products and account words recognition should favour, comma-separated."""
    pause_on_dtmf: bool = False
    """Pause a call (silence in its recordings, nothing transcribed, no audio to listeners)
    while keypad digits are being entered."""
    asr_word_timestamps: bool = True
    """Whisper: each final's words with their times, in the transcript's JSON."""
    vosk_model_path: Path = Path("model")
    silence_flush_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    asr_threads: Annotated[int, Field(ge=1, le=64)] = 1
    asr_workers: Annotated[int, Field(ge=1, le=64)] = 2
    asr_max_lag_seconds: Annotated[float, Field(ge=1, le=3600)] = 30.0
    asr_recycle_calls: Annotated[int, Field(ge=0, le=1_000_000)] = 500
    """After this many calls the recognition process is replaced: a fresh one takes new calls,
    the old one finishes those it serves, then stops (0: never)."""
    webhook_url: str = ""
    """Where each call's events are posted (Standard Webhooks), comma-separated; none: off."""
    webhook_secret: SecretStr | None = None
    """`whsec_` and the base64 of the signing key, as Standard Webhooks writes it."""
    webhook_events: str = ""
    """The events to post, comma-separated; empty: all but `transcript.partial`."""
    webhook_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    webhook_retry_max_seconds: Annotated[float, Field(ge=1, le=86_400)] = 300.0
    """The longest wait between two tries of a delivery (the wait doubles from half a second)."""
    webhook_give_up_seconds: Annotated[float, Field(ge=1, le=30 * 86_400)] = 86_400.0
    """A delivery not made this long after its event is given up (logged and counted)."""
    asr_processes: str = "per-worker"
    """Recognition processes: `per-worker` (each server process has its own), or a number
    below `WORKERS` of processes that all server processes share."""

    @field_validator(
        "twilio_account_sid",
        "twilio_auth_token",
        "twilio_number",
        "twilio_app_sid",
        "twilio_api_key",
        "twilio_api_secret",
        "public_url",
        "forward_to",
        "whisper_model",
        "relay_api_token",
        "redis_url",
        "webhook_secret",
        "database_url",
        "recordings_url",
        "retention_days",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return _optional_str(value)

    @field_validator("twilio_account_sid", "twilio_api_key", "twilio_app_sid")
    @classmethod
    def _sid(cls, value: str | None, info: ValidationInfo) -> str | None:
        prefix = SID_PREFIXES[str(info.field_name)]
        if value is not None and not re.fullmatch(prefix + r"[0-9a-fA-F]{32}", value):
            raise ValueError(f"must be '{prefix}' followed by 32 hex digits")
        return value

    @field_validator("twilio_number", "forward_to")
    @classmethod
    def _phone_number(cls, value: str | None) -> str | None:
        if value is not None and not is_e164(value):
            raise ValueError("must be an E.164 number such as +14155550100")
        return value

    @field_validator("public_url", "twilio_api_base")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as https://abc.ngrok.app")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query string or fragment")
        return value.rstrip("/")

    @field_validator("whisper_model")
    @classmethod
    def _whisper_model(cls, value: str | None) -> str | None:
        """A folder must be a CTranslate2 model; a name (`base.en`, `Systran/...`) is the
        hub's. Anything written as a path is a folder that must be there."""
        if value is None:
            return None
        folder = Path(value).expanduser()
        as_path = value.startswith(("/", ".", "~")) or value.count("/") > 1
        if (folder.exists() or as_path) and not (folder / "model.bin").is_file():
            problem = "is not" if folder.exists() else "does not exist, and is not"
            raise ValueError(f"{value} {problem} a CTranslate2 Whisper model folder")
        return value

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: str) -> str:
        value = value.strip().lower()
        if value != "auto" and not (value.isdigit() and 1 <= int(value) <= 64):
            raise ValueError("must be a number of processes (1-64) or 'auto'")
        return value

    @property
    def worker_count(self) -> int:
        return (os.cpu_count() or 1) if self.workers == "auto" else int(self.workers)

    @property
    def shared_recognition_processes(self) -> int | None:
        """How many recognition processes the server processes share; None: one each."""
        if self.asr_processes == "per-worker" or self.asr_engine == "off":
            return None
        count = int(self.asr_processes)
        return count if count < self.worker_count else None

    @field_validator("console_port")
    @classmethod
    def _console_port(cls, value: str) -> str:
        value = value.strip().lower()
        if value != "auto" and not (value.isdigit() and 0 <= int(value) <= 65535):
            raise ValueError("must be 'auto', a port number, or 0 for none")
        if value.isdigit() and int(value) in BROWSER_BLOCKED_PORTS:
            raise ValueError(f"browsers refuse port {value}: choose another")
        return value

    @property
    def browser_port(self) -> int | None:
        """The second port browsers use (the console), or None when PORT itself serves them."""
        if self.console_port == "auto":
            if self.port not in BROWSER_BLOCKED_PORTS:
                return None
            return self.port + CONSOLE_PORT_OFFSET
        port = int(self.console_port)
        return None if port in (0, self.port) else port

    @property
    def console_base_port(self) -> int:
        """Where a browser reaches the console and Socket.IO."""
        return self.browser_port or self.port

    @field_validator("asr_processes")
    @classmethod
    def _asr_processes(cls, value: str) -> str:
        value = value.strip().lower()
        if value != "per-worker" and not (value.isdigit() and 1 <= int(value) <= 64):
            raise ValueError("must be 'per-worker' or a number of processes (1-64)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis:// (or rediss://, unix://) URL")
        return value

    @field_validator("recordings_url")
    @classmethod
    def _recordings_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme != "s3" or not parts.netloc:
                raise ValueError("must be an s3://bucket/prefix URL")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parts = urlsplit(value.get_secret_value())
            if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
                raise ValueError("must be a postgresql://user:password@host:5432/db URL")
        return value

    @model_validator(mode="after")
    def _redaction_needs_transcripts(self) -> Settings:
        if self.redact != "off" and self.asr_engine == "off":
            raise ValueError(
                f"REDACT={self.redact} needs a speech engine (ASR_ENGINE=off): redaction finds "
                "what to mask in the transcripts"
            )
        return self

    @model_validator(mode="after")
    def _workers_share_redis(self) -> Settings:
        if self.asr_processes.isdigit() and int(self.asr_processes) > self.worker_count:
            raise ValueError(
                f"ASR_PROCESSES={self.asr_processes} is more than WORKERS={self.workers} "
                f"({self.worker_count}): each server process uses one recognition process"
            )
        if self.worker_count > 1 and self.redis_url is None:
            raise ValueError(
                f"WORKERS={self.workers} needs REDIS_URL (e.g. redis://127.0.0.1:6379/0): the "
                "processes share calls, listeners and limits through Redis"
            )
        return self

    @field_validator("webhook_url")
    @classmethod
    def _webhook_urls(cls, value: str) -> str:
        for url in (part.strip() for part in value.split(",") if part.strip()):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            key = value.get_secret_value().removeprefix("whsec_")
            try:
                decoded = base64.b64decode(key + "=" * (-len(key) % 4), validate=True)
            except ValueError:
                decoded = b""
            if len(decoded) < 16:
                raise ValueError("must be 'whsec_' and the base64 of at least 16 random bytes")
        return value

    @field_validator("webhook_events")
    @classmethod
    def _webhook_events(cls, value: str) -> str:
        unknown = {e.strip() for e in value.split(",") if e.strip()} - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown {sorted(unknown)}; the events are {', '.join(EVENT_TYPES)}")
        return value

    @model_validator(mode="after")
    def _webhooks_are_signed(self) -> Settings:
        if self.webhook_urls and self.webhook_secret is None:
            raise ValueError(
                "WEBHOOK_URL needs WEBHOOK_SECRET (whsec_ and base64 of a random key): receivers "
                'verify every delivery with it; make one with python -c "import base64, os; '
                "print('whsec_' + base64.b64encode(os.urandom(24)).decode())\""
            )
        return self

    @property
    def webhook_urls(self) -> list[str]:
        return [part.strip() for part in self.webhook_url.split(",") if part.strip()]

    @property
    def webhook_event_types(self) -> frozenset[str]:
        """The events to post: those named, or every one but the partials."""
        named = frozenset(e.strip() for e in self.webhook_events.split(",") if e.strip())
        return named or DEFAULT_EVENT_TYPES

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    @field_validator("allowed_destinations")
    @classmethod
    def _prefixes(cls, value: str) -> str:
        for prefix in (p.strip() for p in value.split(",") if p.strip()):
            if not re.fullmatch(r"\+\d{1,15}", prefix):
                raise ValueError(f"{prefix!r} is not a '+' and digits prefix such as +1 or +4420")
        return value

    @property
    def destination_prefixes(self) -> list[str]:
        return [p.strip() for p in self.allowed_destinations.split(",") if p.strip()]

    @field_validator("relay_api_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    def calling_missing(self) -> list[str]:
        """The settings that placing a call still needs (empty when calling is configured)."""
        missing = []
        if self.twilio_account_sid is None:
            missing.append("TWILIO_ACCOUNT_SID")
        has_key = self.twilio_api_key is not None and self.twilio_api_secret is not None
        if not has_key and self.twilio_auth_token is None:
            missing.append("TWILIO_AUTH_TOKEN (or TWILIO_API_KEY and TWILIO_API_SECRET)")
        if self.twilio_number is None:
            missing.append("TWILIO_NUMBER")
        if self.public_url is None:
            missing.append("PUBLIC_URL")
        return missing

    def browser_calling_missing(self) -> list[str]:
        """The settings `GET /token` needs (empty when browsers can place calls)."""
        needed = {
            "TWILIO_ACCOUNT_SID": self.twilio_account_sid,
            "TWILIO_API_KEY": self.twilio_api_key,
            "TWILIO_API_SECRET": self.twilio_api_secret,
            "TWILIO_APP_SID": self.twilio_app_sid,
            "TWILIO_NUMBER": self.twilio_number,
        }
        return [name for name, value in needed.items() if value is None]

    @property
    def keyterm_list(self) -> list[str]:
        return keyterm_list(self.asr_keyterms)

    @field_validator("asr_keyterms")
    @classmethod
    def _keyterms(cls, value: str) -> str:
        keyterm_list(value)  # raises, naming what is wrong
        return value

    def secrets(self) -> list[str]:
        """Every secret value, so that logging can redact them wherever they appear."""
        secrets = [
            secret.get_secret_value()
            for secret in (
                self.twilio_auth_token,
                self.twilio_api_secret,
                self.relay_api_token,
                self.webhook_secret,
            )
            if secret is not None and secret.get_secret_value()
        ]
        urls = [self.redis_url, self.database_url.get_secret_value() if self.database_url else None]
        passwords = [urlsplit(url).password for url in urls if url]
        # boto3 reads the object store's secret itself, from the standard variable.
        passwords.append(os.environ.get("AWS_SECRET_ACCESS_KEY"))
        return secrets + [password for password in passwords if password]


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning pydantic's report into one line per wrong variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            message = str(problem["msg"]).removeprefix("Value error, ")
            if problem["loc"]:
                message = f"{str(problem['loc'][0]).upper()}: {message}"
            lines.append(message)
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from None
