"""Run an ablation grid with Ray Tune, one Tune trial per expanded config, one MLflow run each.

`run_grid` is what `diffseg3d ablate` calls. The flow (DESIGN.md "Embedded defaults and
scale-out"):

1. Expand the grid (`grid.expand`) into named trials with resolved configs.
2. Connect to Ray: the cluster at `RAY_ADDRESS` when set, else a local Ray with the machine's
   CPUs, no dashboard, every Ray server bound to 127.0.0.1 and token authentication on (Ray
   generates the token in `~/.ray/auth_token`; see `connection.connect_ray`). Refuse at once, before
   any trial starts, trials that no node can ever hold (e.g. GPUs on a CPU-only cluster),
   instead of letting Tune wait forever.
3. On the driver, create the MLflow experiment (named after the grid) and the grid's parent run
   once; trials only open child runs (creating the experiment from several trials races).
4. Run the trials with `tune.Tuner` over `tune.grid_search` of the trial names; resources per
   trial from each config (`resources.trial_resources`). The Tune experiment folder is keyed
   by the expansion, `<storage>/<grid>_<expansion hash>` (storage `<out_dir>/ray_results` or
   `storage_path`, shared storage on a cluster): the same grid on another data set (or any
   other change of a trial config) gets its own folder and MLflow parent run beside the first.
   A lost trial is retried from its last checkpoint up to `max_failures` times; a diverged
   one (non-finite loss, `train.stop_on_nonfinite`) is not: it would diverge again.
   One driver per expansion: `run_grid` holds `output_lock` on
   `<out_dir>/locks/ablate_<grid>_<hash>.lock` from before Ray starts to the end, so the same
   command launched twice refuses the second at once, naming the first's pid.
5. Rerunning the same command after an interruption finds the Tune experiment of the same
   expansion (`Tuner.can_restore`) and restores it: finished trials are not rerun, unfinished
   and errored ones continue from their checkpoints, and the same MLflow parent run is reused
   (the manifest `<experiment folder>/diffseg3d_grid.json` records it). A trial whose last
   checkpoint Tune never registered (the driver was SIGKILLed right after the trial saved it)
   resumes from its working folder `<experiment folder>/<trial>/work/checkpoints/` instead
   (`trainable.train_trial`).
6. The console shows one progress line per trial report, end or error (`progress`: trials
   done / running with their steps / pending / failed, elapsed time, time left) instead of
   Tune's status tables and per-trial config boxes, and the workers' own output without its
   per-checkpoint noise (`WORKER_NOISE`); Ray's log files keep everything. `ray_output="full"`
   (`diffseg3d ablate --ray-output full`) shows Tune's and the workers' output unfiltered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from diffseg3d.experiments.cluster.connection import check_reachable_from_all_nodes, connect_ray
from diffseg3d.experiments.cluster.manifest import (
    DATA_DIGESTS_KEY,
    check_data_unchanged,
    close_parent_run,
    data_digests,
    open_parent_run,
    read_manifest,
    write_manifest,
)
from diffseg3d.experiments.cluster.progress import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    TrialProgress,
    progress_line,
    steps_done,
)
from diffseg3d.experiments.cluster.resources import (
    ResourceRequestError,
    check_cluster_fits,
    trial_env,
    trial_resources,
)
from diffseg3d.experiments.cluster.trainable import (
    FAILED_METRIC,
    FAULT_KILL_TRIAL_ENV,
    FAULT_MARKER_DIR_ENV,
    train_trial,
)
from diffseg3d.experiments.config.errors import ConfigError
from diffseg3d.experiments.grid import absolute_root
from diffseg3d.experiments.output_lock import ablate_lock_path, output_lock

__all__ = [
    "RAY_OUTPUTS",
    "ResourceRequestError",
    "experiment_folder_name",
    "failed_trials",
    "run_grid",
]

#: `run_grid(ray_output=...)`: "progress" (progress lines, filtered worker output) or "full".
RAY_OUTPUTS = ("progress", "full")

#: Worker output lines kept off the console in "progress" mode (they stay in the workers' log
#: files): Tune's line per saved checkpoint and MLflow's artifact progress bars.
WORKER_NOISE = ("Checkpoint successfully created", "Downloading artifacts",
                "Uploading artifacts")

#: Hex digits of the expansion hash (`grid.grid_hash`) in the Tune experiment folder's name.
EXPANSION_HASH_CHARS = 8


def run_grid(
    grid_path: str | os.PathLike,
    *,
    profile: str | None = "quick",
    data_override: str | os.PathLike | None = None,
    out_dir: str | os.PathLike = "runs",
    max_concurrent: int = 2,
    tracking_uri: str | None = None,
    max_failures: int = 2,
    storage_path: str | None = None,
    seeds: list[int] | None = None,
    ray_output: str = "progress",
) -> list[dict]:
    """Run (or resume) every trial of the grid at `grid_path`; one result dict per trial.

    profile: `smoke` | `quick` | `paper` (experiments/profiles), None for the grid's own values.
    data_override: a prepared data folder replacing every data set of the grid.
    out_dir: local output folder: `mlflow.db` + `mlartifacts/` (default tracking) and
        `ray_results/` (default Tune storage).
    max_concurrent: trials running at once (Ray also limits by resources).
    tracking_uri: MLflow tracking URI; default `MLFLOW_TRACKING_URI`, else
        `sqlite:///<out_dir>/mlflow.db` (absolute, so trials in other working dirs find it).
    max_failures: retries of a trial whose worker died or that raised (Tune FailureConfig).
    storage_path: Tune storage (local path, NFS mount or `s3://...`); default
        `<out_dir>/ray_results`. On a multi-node cluster it must be storage every node sees.
    seeds: replaces the grid's `seeds:` (every trial runs once per seed); None keeps them.
    ray_output: "progress" (default): progress lines on stderr, Tune silent, the workers'
        output without `WORKER_NOISE`; "full": Tune's status output and every worker line too.

    Returns, in grid order, `{"trial", "hash", "status", "error", "metrics", "checkpoint"}`:
    status "ok" (final report received), "error" (raised or lost more than `max_failures`
    times; `error` is the root cause in one line) or "unfinished" (driver interrupted by
    Ctrl-C or SIGTERM: the result also holds `"signal"`, see `interrupted_by`, and the grid's
    MLflow runs still RUNNING were ended KILLED); a second signal raises `GridInterrupted`;
    `metrics` is the last reported dict (the test means for finished trials); `checkpoint`
    the path of its last checkpoint on Tune's storage. Failed trials are returned, not raised:
    `failed_trials` turns them into an exit status.

    Note: on a restore, Tune keeps the original run's `max_concurrent` and `max_failures`.
    """
    from diffseg3d.experiments.grid import expand, grid_hash, load_grid, resolve_grid_path
    from diffseg3d.experiments.tracking.mlflow_runs import default_tracking_uri

    if max_concurrent < 1:
        raise ValueError(f"max_concurrent={max_concurrent}: must be >= 1")
    if max_failures < 0:
        raise ValueError(f"max_failures={max_failures}: must be >= 0")
    if ray_output not in RAY_OUTPUTS:
        raise ValueError(f"ray_output={ray_output!r}: must be one of {RAY_OUTPUTS}")

    grid_path = resolve_grid_path(grid_path)
    if data_override is not None:
        # Absolute before expansion: trials run in their own working directories, and the
        # config hash must not change when the runner resolves the path later.
        data_override = Path(data_override).resolve()
        if not data_override.is_dir():
            raise ConfigError(f"--data {data_override}: no such prepared data folder")
    grid = load_grid(grid_path)
    if seeds is not None:
        grid = grid.model_copy(update={"seeds": list(seeds)})
    trials = expand(grid, profile, None if data_override is None else str(data_override))
    if not trials:
        raise ConfigError(f"{grid_path}: the grid expands to no trials")
    grid_name = _grid_name(grid, grid_path)
    expansion = grid_hash(trials)
    folder_name = experiment_folder_name(grid_name, expansion)

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tracking_uri = tracking_uri or default_tracking_uri(out)
    storage = storage_path or str(out / "ray_results")
    experiment_path = _join(storage, folder_name)

    configs = {t.name: _resolved_config_dict(t.config) for t in trials}
    requests = {name: trial_resources(cfg) for name, cfg in configs.items()}
    envs = {name: trial_env(req) for name, req in requests.items()}
    hashes = {t.name: t.hash for t in trials}

    # Data changed in place since an earlier run of this expansion: refused before Ray starts.
    digests = data_digests([cfg["data"]["root"] for cfg in configs.values()])
    check_data_unchanged(read_manifest(experiment_path), digests, experiment_path)

    # One driver per expansion in --out: a second launch refuses here, before Ray starts.
    signals: list[str] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(output_lock(ablate_lock_path(out, folder_name),
                                        f"grid {grid_name} (Tune folder {folder_name}) in {out}"))
        stack.enter_context(_sigterm_as_ctrl_c(signals))
        ray = connect_ray()
        stack.enter_context(_sigterm_as_ctrl_c(signals))  # over the handler ray.init installed
        nodes = ray.nodes()
        check_cluster_fits(requests, nodes, ray.cluster_resources())
        check_reachable_from_all_nodes(
            tracking_uri, storage, {n["NodeManagerAddress"] for n in nodes if n.get("Alive", True)}
        )

        from ray import tune

        manifest = read_manifest(experiment_path)
        restoring = tune.Tuner.can_restore(experiment_path)
        print(f"grid {grid_name}: {'resuming' if restoring else 'starting'} {len(trials)} trials "
              f"in {experiment_path}", file=sys.stderr)

        experiment_id, parent_run_id = open_parent_run(
            tracking_uri, out, grid_name, manifest if restoring else None, expansion
        )
        write_manifest(
            experiment_path,
            {
                "grid": str(Path(grid_path).resolve()),
                "profile": profile,
                "data_override": None if data_override is None
                else str(Path(data_override).resolve()),
                "tracking_uri": tracking_uri,
                "experiment": grid_name,
                "experiment_id": experiment_id,
                "expansion": expansion,
                "parent_run_id": parent_run_id,
                "trials": hashes,
                DATA_DIGESTS_KEY: digests,
            },
        )

        trainable = tune.with_resources(
            tune.with_parameters(
                train_trial,
                configs=configs,
                envs=envs,
                tracking_uri=tracking_uri,
                experiment=grid_name,
                parent_run_id=parent_run_id,
                experiment_path=None if "://" in experiment_path else experiment_path,
                fault={k: os.environ[k] for k in (FAULT_KILL_TRIAL_ENV, FAULT_MARKER_DIR_ENV)
                       if k in os.environ},
            ),
            resources=lambda param: requests[param["trial"]],
        )
        full = ray_output == "full"
        progress = _progress_callback(
            grid_name, {name: int(cfg["train"]["steps"]) for name, cfg in configs.items()})
        # Tune's verbose 1 prints its status tables and a config box per trial; 0 leaves the
        # console to the progress lines (driver-side warnings and errors still show).
        verbose = 1 if full else 0
        if restoring:
            tuner = tune.Tuner.restore(
                experiment_path, trainable, resume_unfinished=True, resume_errored=True
            )
            # Tune restores the first run's RunConfig (callbacks and verbosity included, the
            # callback with that run's clock): this run's are set on it instead.
            restored = tuner._local_tuner.get_run_config()
            restored.callbacks, restored.verbose = [progress], verbose
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={"trial": tune.grid_search([t.name for t in trials])},
                tune_config=tune.TuneConfig(
                    max_concurrent_trials=max_concurrent,
                    trial_name_creator=_trial_name,
                    trial_dirname_creator=_trial_name,
                ),
                run_config=tune.RunConfig(
                    name=folder_name,
                    storage_path=storage,
                    failure_config=tune.FailureConfig(max_failures=max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                    callbacks=[progress],
                    verbose=verbose,
                ),
            )
        tune_logger = logging.getLogger("ray.tune.tune")
        stop_lines = _TuneStopLines()
        if not full:
            tune_logger.addFilter(stop_lines)
        try:
            with contextlib.nullcontext() if full else _quiet_worker_output(WORKER_NOISE):
                result_grid = tuner.fit()
        except KeyboardInterrupt:  # a second signal: Tune's forced stop
            end_interrupted_runs(tracking_uri, parent_run_id)
            raise GridInterrupted(signals[-1] if signals else "SIGINT") from None
        finally:
            tune_logger.removeFilter(stop_lines)
        results = _collect(result_grid, [t.name for t in trials], hashes)
        close_parent_run(tracking_uri, parent_run_id, failed_trials(results))
        if any(r["status"] == "unfinished" for r in results):  # stopped by Ctrl-C or SIGTERM
            name = signals[-1] if signals else "SIGINT"
            end_interrupted_runs(tracking_uri, parent_run_id)
            for r in results:
                if r["status"] == "unfinished":
                    r.update(signal=name,
                             error=f"interrupted by {name}; rerun the same command to resume it")
        return results


def experiment_folder_name(grid_name: str, expansion: str) -> str:
    """`<grid>_<first EXPANSION_HASH_CHARS of the expansion hash>`: the Tune experiment folder
    (and Tune experiment name) of one expansion of a grid."""
    return f"{grid_name}_{expansion[:EXPANSION_HASH_CHARS]}"


def failed_trials(results: Sequence[Mapping]) -> list[tuple[str, str]]:
    """(trial name, error) for every result of `run_grid` that did not finish."""
    return [(r["trial"], r["error"] or r["status"]) for r in results if r["status"] != "ok"]


def _trial_name(trial) -> str:
    # Tune's default "train_trial_<id>_<n>_trial=<name>,..." hides the grid's readable name.
    return str(trial.config["trial"])


# ---------------------------------------------------------------------------------------------
# Console output


def _progress_callback(grid: str, totals: Mapping[str, int]):
    """A Tune callback printing the grid's progress (`_ProgressPrinter`); `totals`: trial name
    -> its `train.steps`."""
    # Defined here, not at import: the runner imports Ray only once it has set Ray's
    # environment (`connection.connect_ray`).
    from ray.tune import Callback

    class GridProgress(_ProgressPrinter, Callback):
        pass

    return GridProgress(grid, totals)


class _ProgressPrinter:
    """The hooks of a Tune callback that print `progress.progress_line` of the grid to stderr
    at every trial result, end and error. Pickled with the Tuner's state, so it holds plain
    values only (no stream)."""

    def __init__(self, grid: str, totals: Mapping[str, int]):
        self.grid = grid
        self.totals = dict(totals)
        self.started: float | None = None
        self.steps_at_start = 0

    def on_step_end(self, iteration, trials, **info):
        if self.started is None:  # before any result of this run: what a resumed grid had
            self.started = time.monotonic()
            self.steps_at_start = steps_done(self._states(trials))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._print(trials, trial, RUNNING, int(result.get("step", 0) or 0))

    def on_trial_complete(self, iteration, trials, trial, **info):
        # Tune calls this before it marks the trial TERMINATED.
        self._print(trials, trial, _ended_state(trial.last_result))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._print(trials, trial, FAILED)

    def _print(self, trials, current, state: str, step: int | None = None) -> None:
        if self.started is None:
            self.on_step_end(0, trials)
        states = self._states(trials, current, state, step)
        line = progress_line(self.grid, states, time.monotonic() - self.started,
                             self.steps_at_start)
        print(line, file=sys.stderr, flush=True)

    def _states(self, trials, current=None, state: str = PENDING,
                step: int | None = None) -> list[TrialProgress]:
        """Every trial of the grid: Tune's (`current` in `state`, at `step` when given), then
        those Tune has not created yet (it adds trials as `max_concurrent` lets them start)."""
        known = []
        for trial in trials:
            found = _trial_progress(trial, self.totals)
            if trial is current:
                found = TrialProgress(found.name, state, found.step if step is None else step,
                                      found.total)
            known.append(found)
        names = {t.name for t in known}
        return known + [TrialProgress(name, PENDING, 0, total)
                        for name, total in self.totals.items() if name not in names]


def _ended_state(last_result: Mapping | None) -> str:
    """FAILED for a trial that ended by reporting `FAILED_METRIC` (`trainable.train_trial`),
    else DONE."""
    return FAILED if FAILED_METRIC in (last_result or {}) else DONE


def _trial_progress(trial, totals: Mapping[str, int]) -> TrialProgress:
    """A Tune trial's state, last reported step and total steps (`progress.TrialProgress`)."""
    name = str(trial.config["trial"])
    last = trial.last_result or {}
    if trial.status == "TERMINATED":
        state = _ended_state(last)
    elif trial.status == "ERROR":
        state = FAILED
    elif trial.status == "RUNNING":
        state = RUNNING
    else:  # PENDING, PAUSED
        state = PENDING
    return TrialProgress(name, state, int(last.get("step", 0) or 0), int(totals.get(name, 0)))


#: Seconds after a grid ends during which `WORKER_NOISE` lines are still dropped: worker output
#: reaches the driver through Ray's log monitor, which can deliver a trial's last lines after
#: `Tuner.fit` has returned (seen on a loaded 2-core machine).
LATE_WORKER_LINES_S = 30.0


class _NoiseFilter:
    """The driver's `ray_print_logs` handler in "progress" mode: forwards the workers' output to
    Ray's own handler (`forward`), without the lines holding one of `noise` while a grid runs
    and for `LATE_WORKER_LINES_S` after it ends (`quiet_until`, `time.monotonic` seconds)."""

    def __init__(self, forward, noise: Sequence[str]):
        self.forward = forward
        self.noise = tuple(noise)
        self.quiet_until = 0.0

    def __call__(self, data) -> None:
        lines = data.get("lines", [])
        if time.monotonic() < self.quiet_until:
            lines = [line for line in lines if not any(n in line for n in self.noise)]
        if lines:
            self.forward({**data, "lines": lines})


@contextlib.contextmanager
def _quiet_worker_output(noise: Sequence[str]):
    """While inside (and `LATE_WORKER_LINES_S` after): the workers' output reaches the console
    without the lines holding one of `noise`.

    Ray offers no filter of its own: `ray.init(log_to_driver=...)` forwards all or nothing, is
    fixed when the driver connects (True for a cluster, `connection.connect_ray`), and turning
    it off would hide the workers' warnings and tracebacks too. The driver prints what the
    workers send through one dispatcher (its `ray_print_logs` handler); this wraps that handler
    in a `_NoiseFilter`, which stays installed until Ray's disconnect removes it (lines can
    arrive after the grid ends) and passes everything through once its quiet time is over. The
    workers' log files (`<Ray temp>/session_*/logs/worker-*`) are written by the workers
    themselves and keep every line. Where Ray's internals differ (another Ray version) the
    output is left unfiltered."""
    try:
        from ray._private import worker as ray_worker

        dispatcher = ray_worker.global_worker_stdstream_dispatcher
        current = dict(dispatcher.handlers).get("ray_print_logs")
    except (ImportError, AttributeError):
        current = None
    if current is None:  # nothing forwarded (log_to_driver off), or unknown internals
        yield
        return
    if isinstance(current, _NoiseFilter):
        quiet = current
        quiet.noise = tuple(noise)
    else:
        quiet = _NoiseFilter(current, noise)
        dispatcher.remove_handler("ray_print_logs")
        dispatcher.add_handler("ray_print_logs", quiet)
    quiet.quiet_until = float("inf")
    try:
        yield
    finally:
        quiet.quiet_until = time.monotonic() + LATE_WORKER_LINES_S


# ---------------------------------------------------------------------------------------------
# Signals: Ctrl-C (SIGINT) and SIGTERM stop the grid the same way


class GridInterrupted(KeyboardInterrupt):
    """The driver was stopped by `signal_name` (SIGINT or SIGTERM) outside Tune's graceful stop
    (before the trials started, or a second signal); its MLflow runs were ended KILLED."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


#: Tune's own lines when it stops on a signal (`ray.tune.tune`): kept off the console in
#: "progress" mode; the command's one line says what to do (rerun it), not `Tuner.restore`.
_TUNE_STOP_LINES = ("Stop signal received", "Wrote the latest version of all result files",
                    "Experiment has been interrupted")


class _TuneStopLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TUNE_STOP_LINES)


@contextlib.contextmanager
def _sigterm_as_ctrl_c(seen: list[str]):
    """While inside: SIGTERM does what Ctrl-C does (appending "SIGTERM" to `seen`): inside
    `Tuner.fit`, Tune's graceful stop (trials stopped, experiment state saved, `fit` returns);
    elsewhere (or a second signal) `GridInterrupted`. Without this a SIGTERM kills the driver
    at once (Ray's handler aborts it), leaving its MLflow runs RUNNING. Re-enter after
    `ray.init`, which installs Ray's own handler. Main thread only (a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum, frame):
        seen.append("SIGTERM")
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(signal.SIGINT, frame)  # Tune's: stop the run gracefully
        else:
            raise GridInterrupted("SIGTERM")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def end_interrupted_runs(tracking_uri: str, parent_run_id: str) -> int:
    """End KILLED the grid's parent run and every trial run under it still RUNNING (a trial
    stopped by a signal on the driver); the number of trial runs ended. A rerun reopens them."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' "
                      "and attributes.status = 'RUNNING'",
        max_results=10000)
    for run in runs:
        client.set_terminated(run.info.run_id, status="KILLED")
    client.set_terminated(parent_run_id, status="KILLED")
    return len(runs)


def interrupted_by(results: Sequence[Mapping]) -> str | None:
    """The signal that stopped the grid ("SIGINT" or "SIGTERM"), None when it was not."""
    return next((r["signal"] for r in results if r.get("signal")), None)


# ---------------------------------------------------------------------------------------------
# Configs and grid identity


def _grid_name(grid, grid_path) -> str:
    name = getattr(grid, "name", None)
    return str(name) if name else Path(grid_path).stem


def _resolved_config_dict(config) -> dict:
    """JSON-able config with `data.root` absolute: trials run in their own working directories."""
    data = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
    root = data.get("data", {}).get("root")
    if root:
        data["data"]["root"] = absolute_root(root)
    return data


def _join(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}" if "://" in storage else str(Path(storage) / name)


# ---------------------------------------------------------------------------------------------
# Results


def _collect(result_grid, order: Sequence[str], hashes: Mapping[str, str]) -> list[dict]:
    by_name: dict[str, dict] = {}
    for result in result_grid:
        name = result.config["trial"]
        metrics = result.metrics or {}
        if result.error is not None:
            status, error = "error", _describe(result.error)
        elif metrics.get(FAILED_METRIC):  # ended without a retry (`trainable.train_trial`)
            status, error = "error", str(metrics[FAILED_METRIC])
        elif not metrics.get("trial_done"):
            # Stopped before its final report (Ctrl-C on the driver): not a result yet.
            status, error = "unfinished", "interrupted; rerun the same command to resume it"
        else:
            status, error = "ok", None
        by_name[name] = {
            "trial": name,
            "hash": hashes.get(name),
            "status": status,
            "error": error,
            "metrics": {k: v for k, v in metrics.items() if not isinstance(v, dict)},
            "checkpoint": None if result.checkpoint is None else result.checkpoint.path,
        }
    missing = [n for n in order if n not in by_name]
    for name in missing:
        by_name[name] = {
            "trial": name, "hash": hashes.get(name), "status": "error",
            "error": "trial never ran (missing from the Tune results)", "metrics": {},
            "checkpoint": None,
        }
    return [by_name[n] for n in order]


def _describe(error: BaseException) -> str:
    """One-line error: the root cause's type and message (Tune wraps it in RayTaskError)."""
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    last = next((line for line in reversed(text) if line.strip()), "")
    return f"{type(cause).__name__}: {last}"[:500]
