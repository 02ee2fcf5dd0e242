"""S3-compatible object storage (`RECORDINGS_URL=s3://bucket/prefix`), through boto3.

Credentials, region and endpoint come from where every AWS SDK looks: `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, the shared config and credentials files, `AWS_ENDPOINT_URL_S3` or
`AWS_ENDPOINT_URL` (MinIO, Cloudflare R2, Backblaze B2, Ceph), and `AWS_REGION` or
`AWS_DEFAULT_REGION`. A call's file is the object `<prefix>/<CallSid>/<file>`; the CallSid is
validated before any key is made from it.

Under `callrelay serve` boto3's sockets are gevent's, so a request waits without holding the
event loop; uploads and reads are made from background tasks and request handlers, never on
the audio path.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from callrelay.ranged_file import RangedFile
from callrelay.twilio.sids import is_call_sid

MULTIPART_BYTES = 16 * 1024 * 1024
"""Files above this are uploaded in parts of this size (S3's minimum part is 5 MiB)."""
READ_AHEAD_BYTES = 1024 * 1024
"""A stored file read through the relay is fetched this much per request."""


class NotACallSid(ValueError):
    pass


@dataclass(frozen=True)
class StoredObject:
    name: str
    size: int


class ObjectStore:
    """One bucket and prefix; every method may raise botocore's errors while it is away."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError("must be an s3://bucket/prefix URL")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        region = os.environ.get("AWS_REGION") or None  # botocore reads AWS_DEFAULT_REGION only
        self._client: Any = boto3.session.Session().client(
            "s3",
            region_name=region,
            config=Config(
                s3={"addressing_style": "path"} if _custom_endpoint() else {},
                retries={"mode": "standard", "max_attempts": 3},
                connect_timeout=5,
                read_timeout=30,
            ),
        )
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES
        )

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, call_sid: str, name: str = "") -> str:
        if not is_call_sid(call_sid):
            raise NotACallSid(call_sid)
        return "/".join(part for part in (self.prefix, call_sid, name) if part)

    def upload(self, call_sid: str, name: str, path: Path) -> int:
        """Upload one file (in parts when large) and check what the store holds is all of it;
        its size. Raises OSError or botocore's errors, and IOError when the sizes differ."""
        size = path.stat().st_size
        key = self.key(call_sid, name)
        self._client.upload_file(str(path), self.bucket, key, Config=self._transfer)
        stored = int(self._client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        if stored != size:
            raise OSError(f"{key}: the store holds {stored} bytes of {size}")
        return size

    def files(self, call_sid: str) -> list[StoredObject]:
        prefix = self.key(call_sid) + "/"
        found = []
        for page in self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            for item in page.get("Contents", []):
                found.append(StoredObject(item["Key"][len(prefix) :], int(item["Size"])))
        return sorted(found, key=lambda stored: stored.name)

    def read(self, call_sid: str, name: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes `start` to `end` (exclusive; None: to the end) of a stored file; b"" past it."""
        wanted = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        try:
            answer = self._client.get_object(
                Bucket=self.bucket, Key=self.key(call_sid, name), Range=wanted
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""
            raise
        return bytes(answer["Body"].read())

    def open(self, call_sid: str, name: str, size: int) -> io.BufferedReader:
        """A stored file to read like a local one (seekable, for byte ranges), fetched a
        megabyte per request."""
        return io.BufferedReader(StoredFileReader(self, call_sid, name, size), READ_AHEAD_BYTES)

    def delete(self, call_sid: str) -> int:
        """Remove every object of the call; how many there were."""
        names = [stored.name for stored in self.files(call_sid)]
        for first in range(0, len(names), 1000):
            self._client.delete_objects(
                Bucket=self.bucket,
                Delete={
                    "Objects": [{"Key": self.key(call_sid, n)} for n in names[first : first + 1000]]
                },
            )
        return len(names)

    def calls(self) -> Iterator[str]:
        """Every call with objects in the store."""
        prefix = f"{self.prefix}/" if self.prefix else ""
        for page in self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, Delimiter="/"
        ):
            for common in page.get("CommonPrefixes", []):
                call_sid = common["Prefix"][len(prefix) :].rstrip("/")
                if is_call_sid(call_sid):
                    yield call_sid


class StoredFileReader(RangedFile):
    """A stored file, seekable, each read one ranged GET."""

    def __init__(self, store: ObjectStore, call_sid: str, name: str, size: int) -> None:
        super().__init__(size)
        self._store, self._call_sid, self._name = store, call_sid, name

    def _read(self, position: int, count: int) -> bytes:
        return self._store.read(self._call_sid, self._name, position, position + count)


def _custom_endpoint() -> bool:
    return bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
