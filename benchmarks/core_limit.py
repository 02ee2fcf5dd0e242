"""A simulated box of slower cores: each of a server's processes limited to a share of one of
this machine's cores, through a cgroup of its own (the CPU controller's bandwidth limit).

On a small machine the load generator needs cores of its own: limited this way, `WORKERS=N`
gets N "cores" of `share` each while the generator keeps the rest, so that scaling with N can
be measured past the machine's own core count. A process over its share waits for the next
period (`PERIOD_US`), which adds up to that much latency: a real core of that speed would
spread the same work evenly instead. Needs root and a mounted cgroup CPU controller (v1's
`cpu`, or v2's `cpu.max`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PERIOD_US = 10_000
V1 = Path("/sys/fs/cgroup/cpu")
V2 = Path("/sys/fs/cgroup")


class CoreLimit:
    def __init__(self, share: float) -> None:
        if not 0 < share <= 1:
            raise SystemExit("--core-share must be above 0 and at most 1")
        if os.geteuid() != 0:
            raise SystemExit("--core-share needs root (it makes cgroups)")
        self.share = share
        self._groups: list[Path] = []

    def _new_group(self, pid: int) -> Path:
        quota = int(PERIOD_US * self.share)
        if (V1 / "cpu.cfs_quota_us").exists():
            group = V1 / f"callrelay-bench-{pid}"
            group.mkdir(exist_ok=True)
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        elif (V2 / "cgroup.controllers").exists():
            group = V2 / f"callrelay-bench-{pid}"
            group.mkdir(exist_ok=True)
            (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            raise SystemExit("--core-share needs a cgroup CPU controller under /sys/fs/cgroup")
        self._groups.append(group)
        return group

    def apply(self, pids: list[int]) -> None:
        """Each process in a group of its own, with one share of a core."""
        for pid in pids:
            group = self._new_group(pid)
            with contextlib.suppress(ProcessLookupError):  # a short-lived helper, gone
                (group / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        """The groups, once their processes have gone."""
        for group in self._groups:
            with contextlib.suppress(OSError):
                group.rmdir()
        self._groups.clear()
