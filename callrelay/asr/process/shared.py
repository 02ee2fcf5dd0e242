"""Recognition processes shared by several server processes (`ASR_PROCESSES` below `WORKERS`).

The process that starts the server processes (gunicorn's master) starts these too, before it
forks any, and calls `check()` from its main loop: one that died is started again at the same
Unix socket, and the server processes it served connect again. Each server process is given
the socket that fewest others use.

They are plain subprocesses, not `multiprocessing` children: the server processes are forked
from the master, and a forked `multiprocessing` parent would terminate them at its own exit.
Whether one is alive is read from a pipe only it holds open (the master reaps every child it
has, these included, so exit codes are not there to read).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from callrelay.asr.process.child import EngineFactory, serve_engine_socket
from callrelay.asr.process.relay_side import RESTART_BACKOFF_SECONDS
from callrelay.logs import log_event

logger = logging.getLogger("callrelay.asr")

STEADY_SECONDS = 60.0
"""A process that ran this long before dying is restarted after the shortest wait again."""


@dataclass
class _Running:
    process: subprocess.Popen[bytes]
    alive_pipe: int
    """Read end of a pipe whose write end only the process holds: readable once it is gone."""
    started_at: float


class SharedRecognition:
    def __init__(self, factory: EngineFactory, count: int) -> None:
        self._factory = pickle.dumps(factory)
        self._directory = tempfile.mkdtemp(prefix="callrelay-asr-")  # mode 0700: ours only
        self.paths = [os.path.join(self._directory, f"asr-{n}.sock") for n in range(count)]
        self._running: list[_Running | None] = [None] * count
        self._deaths = [0] * count
        self._restart_at: list[float | None] = [None] * count

    def start(self) -> None:
        for number in range(len(self.paths)):
            self._start(number)

    @property
    def pids(self) -> list[int]:
        return [running.process.pid if running else 0 for running in self._running]

    def least_used(self, in_use: Iterable[str | None]) -> str:
        """The socket for a new server process, given those the running ones use."""
        counts = Counter(in_use)
        return min(self.paths, key=lambda path: counts[path])

    def check(self) -> None:
        """Note the processes that died and start again those whose wait is over; never
        blocks (it runs in the master's loop)."""
        now = time.monotonic()
        for number, running in enumerate(self._running):
            if running is not None and _gone(running.alive_pipe):
                os.close(running.alive_pipe)
                _reap(running.process)
                self._running[number] = None
                lived = now - running.started_at
                deaths = 0 if lived > STEADY_SECONDS else self._deaths[number] + 1
                self._deaths[number] = deaths
                wait = RESTART_BACKOFF_SECONDS[min(deaths, len(RESTART_BACKOFF_SECONDS) - 1)]
                self._restart_at[number] = now + wait
                log_event(
                    logger,
                    "asr_process_died",
                    logging.ERROR,
                    process=running.process.pid,
                    shared=True,
                    restartInSeconds=wait,
                )
            restart_at = self._restart_at[number]
            if restart_at is not None and now >= restart_at:
                self._restart_at[number] = None
                self._start(number)
                log_event(logger, "asr_process_restarted", process=self.pids[number])

    def stop(self) -> None:
        for number, running in enumerate(self._running):
            if running is not None:
                with contextlib.suppress(OSError):
                    running.process.kill()
                _reap(running.process)
                os.close(running.alive_pipe)
                self._running[number] = None
        shutil.rmtree(self._directory, ignore_errors=True)

    def _start(self, number: int) -> None:
        path = self.paths[number]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # what a dead one left
        alive_read, alive_write = os.pipe()
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, path, str(alive_write)],
            stdin=subprocess.PIPE,
            pass_fds=[alive_write],
        )
        os.close(alive_write)
        assert process.stdin is not None
        process.stdin.write(self._factory)
        process.stdin.close()
        self._running[number] = _Running(process, alive_read, time.monotonic())


def _gone(alive_pipe: int) -> bool:
    readable, _, _ = select.select([alive_pipe], [], [], 0)
    return bool(readable)


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Collect its exit (gone already, or just killed); gunicorn's master may have done so."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def main() -> None:
    """`python -m callrelay.asr.process.shared PATH FD`: the factory arrives pickled on stdin;
    FD is held open, never written, until the process ends."""
    path, _alive = sys.argv[1], int(sys.argv[2])
    factory = pickle.load(sys.stdin.buffer)
    serve_engine_socket(path, factory)


if __name__ == "__main__":
    main()
