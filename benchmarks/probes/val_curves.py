"""Validation Dice per step of single `diffseg3d train` runs, side by side: one figure and one
Markdown table (step columns) from each run's MLflow metric history (`val_dice`).

Each argument is `LABEL=STORE`: STORE is a tracking URI (`sqlite:///.../mlflow.db`) or the
`--out` folder of a `diffseg3d train` run (its `mlflow.db`); the store must hold one run (the
trial), or name it as `LABEL=STORE#RUN_ID`. The figure is `analysis.figures.curves`'s
training-curve panel for `val_dice`, so it reads like the `make tables` figure.

    .venv/bin/python -m benchmarks.probes.val_curves --out docs/figures/noise_prediction_curves \
        "mask prediction=runs_mask" "noise prediction=runs_eps"

docs/NOISE_PREDICTION.md has the dated results.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from diffseg3d.analysis.figures.curves import training_curves
from mlflow.tracking import MlflowClient

#: The metric plotted and tabulated.
KEY = "val_dice"


def parse_source(item: str) -> tuple[str, str, str | None]:
    """(label, tracking URI, run id or None) from `LABEL=STORE[#RUN_ID]`."""
    label, sep, rest = item.partition("=")
    if not sep or not label or not rest:
        raise SystemExit(f"error: {item!r}: expected LABEL=STORE[#RUN_ID]")
    store, _, run_id = rest.partition("#")
    if "://" not in store:
        store = f"sqlite:///{(Path(store) / 'mlflow.db').resolve()}"
    return label, store, run_id or None


def history(label: str, uri: str, run_id: str | None) -> pd.DataFrame:
    """`run_id, key, step, value, setting` rows of `KEY` for the one run of `uri` (or `run_id`)."""
    client = MlflowClient(uri)
    if run_id is None:
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(experiments)
        if len(runs) != 1:
            raise SystemExit(f"error: {uri} holds {len(runs)} runs; "
                             f"name one as {label}=STORE#RUN_ID")
        run_id = runs[0].info.run_id
    rows = [(run_id, KEY, m.step, m.value, label) for m in client.get_metric_history(run_id, KEY)]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "setting"])


def markdown(curves: pd.DataFrame) -> str:
    """One row per label, one column per step, values to 3 decimals (empty: not validated)."""
    table = curves.pivot_table(index="setting", columns="step", values="value", sort=False)
    table = table[sorted(table.columns)]
    head = "| run | " + " | ".join(str(s) for s in table.columns) + " |"
    rule = "|---" * (len(table.columns) + 1) + "|"
    lines = [head, rule]
    for label, row in table.iterrows():
        cells = ["" if pd.isna(v) else f"{v:.3f}" for v in row]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", metavar="LABEL=STORE[#RUN_ID]")
    parser.add_argument("--out", required=True, help="figure path without suffix (.png, .pdf)")
    parser.add_argument("--data-set", default="phantom", help="data set shown in the legend")
    args = parser.parse_args(argv)
    curves = pd.concat([history(*parse_source(item)) for item in args.sources], ignore_index=True)
    runs = curves[["run_id", "setting"]].drop_duplicates().assign(data_set=args.data_set)
    paths = training_curves(curves.drop(columns="setting"), runs, Path(args.out), keys=(KEY,),
                            figsize=(7.0, 4.5))
    print(markdown(curves))
    print("wrote", ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
