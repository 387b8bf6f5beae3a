"""Trials of one grid log the same data set at the same moment into one SQLite store: the
store's look-up-then-insert of the dataset row can then hit its unique constraint in the slower
trial. `TrialRun.log_inputs` retries that conflict, so every run ends up linked to one row."""

import multiprocessing as mp
import sqlite3

import pytest
from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom
from diffseg3d.experiments.tracking.mlflow_runs import TrialRun, _transient_or_dataset_race
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

WRITERS = 4
ROUNDS = 3


def _log_at_the_barrier(uri, experiment_id, phantom, barrier, rounds, queue):
    from diffseg3d.core.data.dataset import PreparedDataset
    from diffseg3d.experiments.tracking.dataset_input import dataset_input

    client = MlflowClient(uri)
    dataset = dataset_input(PreparedDataset.load(phantom))
    run_ids = []
    for _ in range(rounds):
        run_id = client.create_run(experiment_id).info.run_id
        barrier.wait(timeout=120)
        TrialRun(client, run_id).log_inputs([dataset])
        run_ids.append(run_id)
    queue.put(run_ids)


def test_concurrent_trials_log_one_dataset_row_without_failing(tmp_path):
    phantom = make_phantom(tmp_path / "phantom", PhantomSpec(cases=6, shape=(16, 16, 8)))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(WRITERS), ctx.Queue()
    run_ids = []
    for round_ in range(ROUNDS):  # a fresh experiment per round: a fresh insert race each time
        experiment_id = client.create_experiment(f"grid{round_}",
                                                 (tmp_path / "art").as_uri())
        procs = [ctx.Process(target=_log_at_the_barrier,
                             args=(uri, experiment_id, phantom, barrier, 1, queue))
                 for _ in range(WRITERS)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=300)
        assert [p.exitcode for p in procs] == [0] * WRITERS
        run_ids += [rid for _ in procs for rid in queue.get(timeout=10)]
    assert len(run_ids) == WRITERS * ROUNDS
    for run_id in run_ids:
        (logged,) = client.get_run(run_id).inputs.dataset_inputs
        assert logged.dataset.name == "phantom"
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        rows = db.execute("SELECT experiment_id, COUNT(*) FROM datasets GROUP BY experiment_id")
        assert sorted(n for _, n in rows) == [1] * ROUNDS


def test_the_unique_conflict_of_sqlite_and_postgresql_is_retried_other_errors_are_not():
    with sqlite3.connect(":memory:") as db:
        db.execute("CREATE TABLE datasets (name TEXT, digest TEXT, UNIQUE (name, digest))")
        db.execute("INSERT INTO datasets VALUES ('phantom', 'abc')")
        with pytest.raises(sqlite3.IntegrityError) as caught:
            db.execute("INSERT INTO datasets VALUES ('phantom', 'abc')")
    wrapped = MlflowException(message=f"(sqlite3.IntegrityError) {caught.value}")
    assert _transient_or_dataset_race(wrapped)
    assert _transient_or_dataset_race(MlflowException(
        'duplicate key value violates unique constraint "uq_datasets"'))
    assert not _transient_or_dataset_race(MlflowException("NOT NULL constraint failed"))
    assert not _transient_or_dataset_race(ValueError("bad digest"))
