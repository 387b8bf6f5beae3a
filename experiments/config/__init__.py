"""diffseg3d.experiments.config: a trial's configuration: `schema.Config` and its `sections`,
`errors` (`ConfigError`, `GridError`), the accelerator rules (`accelerators`), `layering` (YAML
files, profiles, per-layer checks, `load_config`) and the grid file's schema (`grid_file`).
Imports nothing above it in the package."""
