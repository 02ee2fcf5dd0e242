"""An S3-compatible server over real HTTP on loopback for the tests: moto's standalone server
(`moto[server]`), buckets in memory, any credentials accepted. Users run MinIO or S3; the
relay speaks to all of them through boto3 the same way."""

from __future__ import annotations

import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import boto3
import requests

from callrelay.simulator.local_relay import free_port
from tests.helpers import wait_for

REGION = "eu-west-1"


@dataclass
class S3Server:
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    secret_key: str = field(default_factory=lambda: "s3secret-" + secrets.token_hex(12))
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self, bucket: str, prefix: str = "calls") -> dict[str, str]:
        """What a relay is given to store its calls in `bucket`: the standard AWS variables."""
        return {
            "RECORDINGS_URL": f"s3://{bucket}/{prefix}",
            "AWS_ACCESS_KEY_ID": "callrelay-test",
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
        }

    def client(self) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="callrelay-test",
            aws_secret_access_key=self.secret_key,
        )

    def start(self) -> S3Server:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answers() -> bool:
            try:
                return requests.get(self.endpoint + "/moto-api/", timeout=1).status_code < 500
            except requests.RequestException:
                return False

        wait_for(answers, timeout=30)
        return self

    def stop(self) -> None:
        """Gone at once, as a store that goes away is (its buckets with it: moto keeps them in
        memory)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def new_bucket(self) -> str:
        name = "calls-" + secrets.token_hex(6)
        self.client().create_bucket(
            Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        return name

    def objects(self, bucket: str) -> dict[str, int]:
        """Every object in the bucket, with its size."""
        found: dict[str, int] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                found[item["Key"]] = int(item["Size"])
        return found
