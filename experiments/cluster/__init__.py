"""diffseg3d.experiments.cluster: running a grid on Ray Tune: `runner` (`run_grid`),
`connection` (local or remote Ray), `manifest` (the Tune experiment's manifest and MLflow parent
run), `trainable` (one Tune trial), `resources` (Ray's request and fit checks) and
`environment` (Ray's process environment)."""
