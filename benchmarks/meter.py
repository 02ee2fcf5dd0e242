"""What a benchmark measures of a server from outside: CPU and memory of all its processes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class ProcessMeter:
    """CPU seconds and memory of a server, from /proc: the processes given (gunicorn's master;
    several, when the server is on several hosts) and every process under them."""

    def __init__(self, *pids: int) -> None:
        self.roots = [pid for pid in pids if pid]
        self.peak_rss_mb = 0.0

    def pids(self) -> list[int]:
        """The roots and every process under them (gunicorn's workers, recognition processes)."""
        found: list[int] = []
        waiting = list(self.roots)
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
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) / 1024
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        return rss
