"""`python -m diffseg3d.cli ...`: the same as the `diffseg3d` entry point."""

import sys

from diffseg3d.cli.main import main

sys.exit(main())
