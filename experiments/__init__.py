"""diffseg3d.experiments: from a grid file to trained, scored and recorded trials.

- `config/`: a trial's configuration (schema, sections, errors) and its layering (YAML files,
  profiles); `profiles/` and `grids/` hold the shipped YAML.
- `grid.py`: a grid file + profile + data override -> validated, named trial configs.
- `trial/`: one trial, start to end, in one process (build, train, checkpoint, score, montage).
- `cluster/`: Ray Tune: running a grid's trials on a local or remote Ray cluster.
- `tracking/`: MLflow: the run record, runs and their artifacts, the logged model, store checks.
"""
