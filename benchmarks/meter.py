"""What a benchmark measures of a server from outside: CPU and memory of all its processes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class ProcessMeter:
    """CPU seconds and memory of the server: gunicorn's master and its worker, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss_mb = 0.0

    def pids(self) -> list[int]:
        """The server and every process under it (gunicorn's worker, the recognition process)."""
        found: list[int] = []
        waiting = [self.pid] if self.pid else []
        while waiting:
            pid = waiting.pop()
            found.append(pid)
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    waiting += map(int, (task / "children").read_text().split())
        return found

    def cpu_seconds(self) -> float:
        return sum(self.cpu_by_process().values())

    def cpu_by_process(self) -> dict[int, float]:
        seconds = {}
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                seconds[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return seconds

    def rss_mb(self) -> float:
        rss = 0.0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) / 1024
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        return rss
