"""diffseg3d.experiments.tracking: MLflow: `record` (names and codecs of what a trial logs),
`mlflow_runs` (a trial's run, the tracking URI), `pyfunc_model` (the logged model),
`store_check` (refusing a damaged store) and `retry` (transient server errors)."""
