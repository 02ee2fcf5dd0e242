"""A throwaway PostgreSQL cluster for the tests: Debian's `postgresql` package (`initdb` and
`pg_ctl` from its versioned folder), on a free loopback port, with a password, stopped and
started again at will. `initdb` refuses to run as root, so as root the cluster runs as the
package's `postgres` user."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from callrelay.simulator.local_relay import free_port

USER = "callrelay"


def postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    assert found[-1], f"{name} is not installed (.ci/run installs Debian's postgresql)"
    return found[-1]


@dataclass
class PostgresServer:
    folder: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    host: str = "127.0.0.1"
    clients: str | None = None
    """A network (`10.77.0.0/24`) whose clients may connect too, with the password."""

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@{self.host}:{self.port}/{database}"

    def create(self) -> PostgresServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "password").write_text(self.password)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for path in (self.folder, self.folder / "password"):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run(
            postgres_bin("initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            "--auth=scram-sha-256",
            f"--pwfile={self.folder / 'password'}",
            "--no-sync",
        )
        if self.clients:
            with (self.data / "pg_hba.conf").open("a") as rules:
                rules.write(f"host all all {self.clients} scram-sha-256\n")
        return self.start()

    def start(self) -> PostgresServer:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses={self.host} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        log = self.folder / "server.log"
        self._run(
            postgres_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-w",
            "-l",
            str(log),
            "start",
        )
        return self

    def stop(self) -> None:
        """A fast shutdown: every connection is cut, as when the database server goes away."""
        self._run(postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def new_database(self) -> str:
        """A fresh, empty database's URL."""
        name = "test_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def _run(self, *command: str) -> None:
        if os.geteuid() == 0:
            command = ("runuser", "-u", "postgres", "--", *command)
        subprocess.run(command, check=True, capture_output=True, timeout=60, cwd=self.folder)
