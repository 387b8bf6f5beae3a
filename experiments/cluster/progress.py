"""How far a grid is: one console line from the states of its trials.

`progress_line` is pure: the runner's Tune callback (`runner._progress_callback`) gathers each
trial's `TrialProgress` from Tune and prints the line at every trial report, end and error, e.g.

    grid paper: 3/12 done, 2 running (t1 400/1000, t2 100/1000), 6 pending, 1 failed
        | 4m12s elapsed, ~9m30s left   (on one line)

The estimate of the time left (`seconds_left`): the grid's throughput so far, the training
steps its trials advanced since the driver started (`steps_at_start`: the steps a resumed grid
had already done) divided by the elapsed seconds, applied to the steps still to run (every
step of a pending trial, the rest of a running one; none of a finished or failed one). So it
assumes the trials still to run train at the rate, and with the concurrency, of those so far,
and it counts neither evaluation after training nor the start of a trial. Before any step has
been reported it is "left: unknown".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

#: Trial states, as `TrialProgress.state` holds them.
DONE, RUNNING, PENDING, FAILED = "done", "running", "pending", "failed"
STATES = (DONE, RUNNING, PENDING, FAILED)


@dataclasses.dataclass(frozen=True)
class TrialProgress:
    """One trial: its name, state (one of `STATES`), last reported training step (0 before its
    first report) and its total steps (`train.steps`)."""

    name: str
    state: str
    step: int
    total: int

    def __post_init__(self):
        if self.state not in STATES:
            raise ValueError(f"trial {self.name}: state {self.state!r} is not one of {STATES}")


def steps_done(trials: Sequence[TrialProgress]) -> int:
    """Training steps the trials have run: all of a finished trial's, the reported ones of the
    others."""
    return sum(t.total if t.state == DONE else min(t.step, t.total) for t in trials)


def steps_left(trials: Sequence[TrialProgress]) -> int:
    """Training steps still to run: the rest of each running or pending trial."""
    return sum(max(t.total - t.step, 0) for t in trials if t.state in (RUNNING, PENDING))


def seconds_left(trials: Sequence[TrialProgress], elapsed_s: float,
                 steps_at_start: int = 0) -> float | None:
    """Seconds until the remaining steps are done at the throughput so far (module docstring);
    None while no step was run since the driver started (or no time has passed)."""
    advanced = steps_done(trials) - steps_at_start
    if advanced <= 0 or elapsed_s <= 0:
        return None
    return steps_left(trials) * elapsed_s / advanced


def format_duration(seconds: float) -> str:
    """`4m12s`, `0m05s`, `1h02m03s`: to the nearest whole second."""
    total = max(round(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def progress_line(grid: str, trials: Sequence[TrialProgress], elapsed_s: float,
                  steps_at_start: int = 0) -> str:
    """The module docstring's line for the trials of `grid` (in the given order)."""
    by_state = {state: [t for t in trials if t.state == state] for state in STATES}
    running = ", ".join(f"{t.name} {t.step}/{t.total}" for t in by_state[RUNNING])
    parts = [f"{len(by_state[DONE])}/{len(trials)} done",
             f"{len(by_state[RUNNING])} running" + (f" ({running})" if running else ""),
             f"{len(by_state[PENDING])} pending"]
    if by_state[FAILED]:
        parts.append(f"{len(by_state[FAILED])} failed")
    left = seconds_left(trials, elapsed_s, steps_at_start)
    estimate = "left: unknown" if left is None else f"~{format_duration(left)} left"
    return (f"grid {grid}: {', '.join(parts)} | {format_duration(elapsed_s)} elapsed, "
            f"{estimate}")
