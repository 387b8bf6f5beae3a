"""A checkpoint that cannot be written for lack of room (RLIMIT_FSIZE in a real subprocess: the
orbax write fails with EFBIG) is one error naming its folder; the previous checkpoint folder stays
complete and the half-written one is removed."""

import subprocess
import sys

import pytest
from diffseg3d.experiments.trial.checkpoint import read_trial_json

SAVE_TWO = """
import resource, signal, sys
from pathlib import Path
import jax, jax.numpy as jnp
from diffseg3d.core.train.state import TrainState
from diffseg3d.experiments.trial.checkpoint import TrialError, save_checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead of a signal
root = Path(sys.argv[1])
info = {"mlflow_run_id": "run", "config_hash": "hash", "trial": "t"}
def state(step):
    w = jax.random.normal(jax.random.PRNGKey(step), (50_000,))  # 200 kB, incompressible
    return TrainState(step=jnp.array(step, jnp.int32), params={"w": w}, opt_state=())
save_checkpoint(root, state(1), info, None)
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, hard))
try:
    save_checkpoint(root, state(2), info, None)
except TrialError as err:
    print("TRIAL ERROR:", err, file=sys.stderr)
    sys.exit(3)
"""

pytestmark = pytest.mark.slow  # a fresh process importing JAX and orbax


def test_no_room_for_a_checkpoint_names_it_and_keeps_the_previous_one(tmp_path):
    root = tmp_path / "checkpoints"
    done = subprocess.run([sys.executable, "-c", SAVE_TWO, str(root)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 3, done.stderr[-3000:]
    line = next(x for x in done.stderr.splitlines() if x.startswith("TRIAL ERROR:"))
    assert line == (
        f"TRIAL ERROR: {root}/step_0000002: cannot write the checkpoint of step 2: File too "
        "large (a full disk, a quota or a file size limit); the previous checkpoint "
        f"{root}/step_0000001 is kept")
    assert sorted(p.name for p in root.iterdir()) == ["step_0000001"]
    assert read_trial_json(root / "step_0000001")["step"] == 1
