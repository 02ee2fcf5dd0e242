"""The transcription benchmark's closing line: which loads stayed live and met the latency goal
in every run of that load."""

from __future__ import annotations

from benchmarks.transcription import RunResult, verdict


def run(calls: int, latencies: list[float], **figures: float) -> RunResult:
    return RunResult(calls, "whisper", latencies=latencies, **figures)  # type: ignore[arg-type]


def test_a_load_counts_only_if_every_run_of_it_held() -> None:
    results = [
        run(8, [0.5] * 20),
        run(10, [0.5] * 20),
        run(10, [0.5] * 18 + [1.2, 1.3]),  # its p95 is over 1 s
        run(12, [0.5] * 20, skipped=3.0),  # fell behind: audio skipped
        run(14, [0.5] * 20, max_lag=2.5),
    ]
    line = verdict(results)
    assert "worst lag < 2 s): 8, 10 calls; final p95" in line
    assert line.endswith("final p95 <= 1.0 s: 8, 12, 14 calls")


def test_a_run_without_finals_meets_no_latency_goal() -> None:
    assert verdict([run(5, [], missing_calls=5)]) == (
        "live (nothing skipped, every call transcribed, worst lag < 2 s): none; "
        "final p95 <= 1.0 s: none"
    )
