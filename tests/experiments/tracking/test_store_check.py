"""`experiments.tracking.store_check`: a damaged, empty, missing or mistyped tracking store is
refused in one line naming it, and checking writes nothing. The damaged stores are
copies of a real `mlflow.db` written by a real `MlflowClient` run."""

import hashlib
import http.server
import shutil
import sqlite3
import threading

import pytest
from diffseg3d.experiments.config.errors import ConfigError
from diffseg3d.experiments.tracking.store_check import TrackingStoreError, check_readable_store

from benchmarks.mlflow_load import free_port


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def real_db(tmp_path_factory):
    """An `mlflow.db` holding one experiment and one run with a metric."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("store")
    db = folder / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.create_experiment("grid", artifact_location=(folder / "art").as_uri())
    run = client.create_run(exp)
    for step in range(50):
        client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
    client.set_terminated(run.info.run_id)
    # Release SQLAlchemy's pooled connections so the file is complete and unlocked.
    client._tracking_client.store.engine.dispose()
    return db


def _refused(uri: str, *fragments: str) -> str:
    with pytest.raises(TrackingStoreError) as caught:
        check_readable_store(uri)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_the_error_is_a_user_error():
    assert issubclass(TrackingStoreError, ConfigError)  # the CLI prints it as `error: ...`


def test_a_real_store_passes_and_is_not_written(real_db):
    before = (_digest(real_db), real_db.stat().st_mtime_ns)
    check_readable_store(f"sqlite:///{real_db}")
    assert (_digest(real_db), real_db.stat().st_mtime_ns) == before
    assert sorted(p.name for p in real_db.parent.iterdir()) == ["mlflow.db"]


def test_a_missing_sqlite_file_is_refused_and_not_created(tmp_path):
    typo = tmp_path / "mlfow.db"
    _refused(f"sqlite:///{typo}", str(typo), "does not exist")
    assert not typo.exists()


def test_a_zero_byte_store_is_refused_and_stays_empty(tmp_path):
    empty = tmp_path / "mlflow.db"
    empty.touch()
    _refused(f"sqlite:///{empty}", str(empty), "empty (0 bytes)")
    assert empty.stat().st_size == 0


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_truncated_store_is_refused(real_db, tmp_path, keep):
    cut = tmp_path / "mlflow.db"
    data = real_db.read_bytes()
    cut.write_bytes(data[: int(len(data) * keep)])
    before = _digest(cut)
    _refused(f"sqlite:///{cut}", str(cut), "truncated")
    assert _digest(cut) == before


def test_a_store_with_a_damaged_schema_page_is_refused(real_db, tmp_path):
    broken = tmp_path / "mlflow.db"
    data = bytearray(real_db.read_bytes())
    data[100:4000] = bytes(range(256)) * 15 + bytes(range(60))  # page 1 after the header
    broken.write_bytes(bytes(data))
    _refused(f"sqlite:///{broken}", str(broken), "damaged")


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    junk = tmp_path / "mlflow.db"
    junk.write_text("experiment_id,run_id\n1,abc\n")
    _refused(f"sqlite:///{junk}", str(junk), "not an SQLite database")


def test_an_sqlite_database_without_mlflow_tables_is_refused(tmp_path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("create table cases (id text)")
    conn.close()
    _refused(f"sqlite:///{other}", str(other), "not an MLflow store", "experiments")


def test_a_folder_given_as_sqlite_file_is_refused(tmp_path):
    _refused(f"sqlite:///{tmp_path}", str(tmp_path), "not a file")


def test_a_missing_file_store_folder_is_refused_and_not_created(tmp_path):
    typo = tmp_path / "mlrnus"
    _refused(typo.as_uri(), str(typo), "does not exist")
    _refused(str(typo), str(typo), "does not exist")
    assert not typo.exists()


def test_an_empty_folder_is_not_a_file_store_and_stays_empty(tmp_path):
    _refused(tmp_path.as_uri(), str(tmp_path), "not an MLflow file store")
    assert list(tmp_path.iterdir()) == []


def test_a_real_file_store_passes(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: file stores are legacy
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    client.create_experiment("grid")
    check_readable_store((tmp_path / "mlruns").as_uri())


def test_a_server_that_does_not_answer_is_refused():
    port = free_port()  # nothing listens there
    _refused(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}", "does not answer")


def test_a_server_that_answers_passes():
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        check_readable_store(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreachable_database_is_refused_without_its_password():
    port = free_port()
    uri = f"postgresql+psycopg2://mlflow:s3cret@127.0.0.1:{port}/mlflow"
    message = _refused(uri, f"127.0.0.1:{port}/mlflow", "cannot be read")
    assert "s3cret" not in message


def test_a_copy_of_the_real_store_passes(real_db, tmp_path):
    copy = tmp_path / "copy.db"
    shutil.copyfile(real_db, copy)
    check_readable_store(f"sqlite:///{copy}")
