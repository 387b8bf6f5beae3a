"""diffseg3d.experiments.config: a trial's configuration: `schema.Config` and its `sections`,
`errors.ConfigError`, the accelerator rules (`accelerators`) and `layering` (YAML files,
profiles, per-layer checks, `load_config`). Imports nothing above it in the package."""
