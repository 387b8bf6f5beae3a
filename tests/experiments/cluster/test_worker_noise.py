"""The console filter of "progress" mode on Ray's own worker-output dispatcher: noise lines are
dropped while a grid runs and for `LATE_WORKER_LINES_S` after it (the log monitor can deliver a
trial's last lines after `Tuner.fit` returns); other lines always pass, and so does everything
once the quiet time is over."""

import pytest
from diffseg3d.experiments.cluster import runner
from ray._private import worker as ray_worker

NOISE = ("Checkpoint successfully created",)


@pytest.fixture
def printed():
    """Ray's dispatcher with a recording `ray_print_logs` handler in place of Ray's printer."""
    dispatcher = ray_worker.global_worker_stdstream_dispatcher
    assert "ray_print_logs" not in dict(dispatcher.handlers)  # no Ray connection in this test
    lines = []
    dispatcher.add_handler("ray_print_logs", lambda data: lines.extend(data["lines"]))
    yield lines
    dispatcher.remove_handler("ray_print_logs")


def _emit(*lines):
    ray_worker.global_worker_stdstream_dispatcher.emit({"lines": list(lines), "pid": 1})


def test_noise_is_dropped_during_the_grid_and_just_after_it(printed):
    with runner._quiet_worker_output(NOISE):
        _emit("Checkpoint successfully created at: a", "step 2 loss 0.5")
    _emit("Checkpoint successfully created at: late", "Traceback (most recent call last):")
    assert printed == ["step 2 loss 0.5", "Traceback (most recent call last):"]


def test_after_the_quiet_time_everything_passes_and_a_second_grid_reuses_the_filter(
        printed):
    dispatcher = ray_worker.global_worker_stdstream_dispatcher
    with runner._quiet_worker_output(NOISE):
        pass
    handler = dict(dispatcher.handlers)["ray_print_logs"]
    handler.quiet_until = 0.0  # the quiet time is over
    _emit("Checkpoint successfully created at: b")
    assert printed == ["Checkpoint successfully created at: b"]
    with runner._quiet_worker_output(NOISE):
        _emit("Checkpoint successfully created at: c")
    # Installed once: the second grid did not wrap the filter in another one.
    assert [name for name, _ in dispatcher.handlers].count("ray_print_logs") == 1
    assert dict(dispatcher.handlers)["ray_print_logs"] is handler
    assert printed == ["Checkpoint successfully created at: b"]
    assert runner.LATE_WORKER_LINES_S > 0
