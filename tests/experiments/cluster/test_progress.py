"""`progress.progress_line`: counts by state, the running trials' steps, the elapsed time and the
estimate from the throughput so far, against values worked out by hand."""

import pytest
from diffseg3d.experiments.cluster.progress import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    TrialProgress,
    format_duration,
    progress_line,
    seconds_left,
    steps_done,
    steps_left,
)


def _grid() -> list[TrialProgress]:
    """3 done, t1 and t2 running, 6 pending, 1 failed at step 500; 1000 steps each."""
    return ([TrialProgress(f"d{i}", DONE, 1000, 1000) for i in range(3)]
            + [TrialProgress("t1", RUNNING, 400, 1000), TrialProgress("t2", RUNNING, 100, 1000)]
            + [TrialProgress(f"p{i}", PENDING, 0, 1000) for i in range(6)]
            + [TrialProgress("f", FAILED, 500, 1000)])


def test_the_line_counts_states_and_estimates_from_the_steps_per_second_so_far():
    # Done 3 * 1000 + 400 + 100 + 500 = 4000 steps in 240 s: 50/3 steps/s. Left: 600 + 900 +
    # 6 * 1000 = 7500 steps (none of the failed one), 7500 / (50/3) = 450 s.
    trials = _grid()
    assert steps_done(trials) == 4000 and steps_left(trials) == 7500
    assert seconds_left(trials, 240.0) == pytest.approx(450.0)
    assert progress_line("paper", trials, 240.0) == (
        "grid paper: 3/12 done, 2 running (t1 400/1000, t2 100/1000), 6 pending, 1 failed"
        " | 4m00s elapsed, ~7m30s left")


def test_left_is_unknown_before_any_step_and_failed_is_left_out_when_none():
    trials = [TrialProgress("a", RUNNING, 0, 20), TrialProgress("b", PENDING, 0, 20)]
    assert seconds_left(trials, 5.0) is None
    assert progress_line("g", trials, 5.0) == (
        "grid g: 0/2 done, 1 running (a 0/20), 1 pending | 0m05s elapsed, left: unknown")


def test_a_resumed_grid_counts_only_the_steps_run_since_the_driver_started():
    # 2000 steps were done before; 500 more in 100 s: 5 steps/s; 500 + 1000 left: 300 s.
    trials = [TrialProgress("a", DONE, 1000, 1000), TrialProgress("b", DONE, 1000, 1000),
              TrialProgress("c", RUNNING, 500, 1000), TrialProgress("d", PENDING, 0, 1000)]
    assert seconds_left(trials, 100.0, steps_at_start=2000) == pytest.approx(300.0)
    assert seconds_left(trials, 100.0, steps_at_start=2500) is None
    assert progress_line("g", trials, 100.0, steps_at_start=2000).endswith(
        "| 1m40s elapsed, ~5m00s left")


def test_a_finished_grid_says_all_done_with_nothing_left():
    trials = [TrialProgress("a", DONE, 20, 20), TrialProgress("b", DONE, 20, 20)]
    assert progress_line("g", trials, 61.0) == (
        "grid g: 2/2 done, 0 running, 0 pending | 1m01s elapsed, ~0m00s left")


def test_durations_and_bad_states():
    assert [format_duration(s) for s in (0, 5.4, 252, 3723)] == [
        "0m00s", "0m05s", "4m12s", "1h02m03s"]
    with pytest.raises(ValueError, match="'stopped'"):
        TrialProgress("x", "stopped", 0, 1)
