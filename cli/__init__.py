"""diffseg3d.cli: the `diffseg3d` command line, outside the core and above every other package.

Modules: `main` (parser, dispatch, one-line errors), `train` (`train`, `ablate`), `evaluate`,
`data` (`data phantom`, `data prepare ...`), `tables`. Each command module imports only argparse
at module level; the libraries it drives (JAX, Ray, MLflow, SciPy, pandas) are imported inside its
functions, so that `diffseg3d --help` answers at once.
"""
