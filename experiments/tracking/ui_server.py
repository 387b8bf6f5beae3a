"""`make ui`: print where each experiment opens, then run MLflow's UI on the store.

    python -m diffseg3d.experiments.tracking.ui_server --backend-store-uri sqlite:///runs/mlflow.db
        [--host 127.0.0.1] [--port 5000]

Prints one line per active experiment, `<name>: <link>` (`ui_view.experiment_url`: a model
training experiment opens on its runs table with the trial comparison view), then replaces
itself with `mlflow ui --backend-store-uri URI --host HOST --port PORT` (same process id, so
stopping it stops the UI). A missing or unreadable store is refused in one line before the UI
starts (`store_check`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from diffseg3d.experiments.tracking.store_check import check_readable_store
from diffseg3d.experiments.tracking.ui_view import experiment_url


def experiment_links(tracking_uri: str, base_url: str) -> list[tuple[str, str]]:
    """(name, UI link) of every active experiment in the store, by name."""
    from mlflow.tracking import MlflowClient

    experiments = MlflowClient(tracking_uri).search_experiments(max_results=1000)
    return sorted((e.name, experiment_url(base_url, e.experiment_id, e.tags))
                  for e in experiments)


def mlflow_command(tracking_uri: str, host: str, port: int) -> list[str]:
    """The `mlflow ui` command line (the `mlflow` script beside this Python's)."""
    beside = os.path.join(os.path.dirname(sys.executable), "mlflow")
    executable = beside if os.path.exists(beside) else shutil.which("mlflow") or "mlflow"
    return [executable, "ui", "--backend-store-uri", tracking_uri, "--host", host,
            "--port", str(port)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend-store-uri", required=True, help="MLflow tracking store")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    try:
        check_readable_store(args.backend_store_uri)
    except ValueError as err:
        print(f"make ui: {err}", file=sys.stderr)
        return 1
    base = f"http://{args.host}:{args.port}"
    links = experiment_links(args.backend_store_uri, base)
    print(f"MLflow UI on {base}; experiments:")
    for name, link in links:
        print(f"  {name}: {link}")
    sys.stdout.flush()
    command = mlflow_command(args.backend_store_uri, args.host, args.port)
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
