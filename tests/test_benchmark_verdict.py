"""The transcription benchmark's closing line: which loads stayed live and met the latency goal
in every run of that load, and each load's p95 over all its runs' finals."""

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
    assert "final p95 <= 1.0 s: 8, 12, 14 calls;" in line


def test_the_pooled_p95_is_over_the_finals_of_every_run_of_a_load() -> None:
    """Two slow finals in one run of 20 put its p95 at 1.41 s; in the 40 finals of both runs
    they are the slowest 5%, so the pooled p95 is at the edge of the others (0.64 s)."""
    results = [run(10, [0.5] * 18 + [1.4, 1.6]), run(10, [0.6] * 20), run(5, [0.4] * 20)]
    line = verdict(results)
    assert line.endswith(
        "final p95 over all runs' finals: 5 calls 0.40 s (1 run), 10 calls 0.64 s (2 runs)"
    )
    assert "final p95 <= 1.0 s: 5 calls;" in line


def test_a_run_without_finals_meets_no_latency_goal() -> None:
    assert verdict([run(5, [], missing_calls=5)]).startswith(
        "live (nothing skipped, every call transcribed, worst lag < 2 s): none; "
        "final p95 <= 1.0 s: none;"
    )
