"""A local grid beside another Ray on the same machine: someone else's `ray start --head`, with
its own token, registered as the machine's latest cluster in Ray's temp folder (where a plain
`ray.init()` would find and join it). The grid starts its own Ray, finishes, and the other Ray
is still up, untouched (no job of ours ran there)."""

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from diffseg3d.experiments.cluster.runner import run_grid

from tests.experiments.cluster.test_runner_ray import (
    BIN,
    _free_port,
    _node_args,
    _port_open,
    _spawn,
    _stop,
    _wait,
)

pytestmark = pytest.mark.slow

#: Prints the other Ray's alive nodes and its jobs (this probe is one of them).
PROBE = (
    "import ray, sys; from ray._private.state import jobs;"
    "ray.init(address=sys.argv[1], logging_level='ERROR');"
    "print('nodes', sum(n['Alive'] for n in ray.nodes()), 'jobs', len(jobs()))"
)


@pytest.fixture
def other_ray(tmp_path, monkeypatch):
    """A second Ray (head node, 1 CPU, 127.0.0.1, its own free ports and token) whose address
    Ray's temp folder names as the latest cluster; this process looks in that folder too."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="dso", dir="/tmp"))  # short: unix socket paths
    token = tmp_path / "other_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = dict(os.environ, RAY_TMPDIR=str(ray_tmp), RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)
    port = _free_port()
    log = tmp_path / "other_head.log"
    head = _spawn([str(BIN / "ray"), "start", "--head", "--port", str(port),
                   "--include-dashboard", "false", *_node_args()], log, env)
    address_file = ray_tmp / "ray" / "ray_current_cluster"
    try:
        _wait(lambda: _port_open(port) and address_file.is_file(), "other ray head", [head],
              [log])
        assert address_file.read_text().strip().endswith(f":{port}")
        monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
        yield f"127.0.0.1:{port}", env
    finally:
        _stop(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _probe(address: str, env: dict) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE, address], env=env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.timeout(600)
def test_a_local_grid_runs_on_its_own_ray_beside_another(tmp_path, other_ray, local_ray):
    import ray
    from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom

    address, env = other_ray
    assert _probe(address, env) == "nodes 1 jobs 1"  # the probe's own job only
    phantom = make_phantom(tmp_path / "phantom", PhantomSpec(cases=6, shape=(16, 16, 8)))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "beside_test", "seeds": [0], "data_sets": {"phantom": "replaced"},
        "base": {"method": "diffusion"},
        "comparisons": [{"table": "1", "axes": {"diffusion.recycling": [True]}}],
    }))
    try:
        results = run_grid(grid, profile="smoke", data_override=phantom, out_dir=tmp_path / "o")
        ours = ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()  # before the other Ray's temp folder (ours too) is removed
    assert [r["status"] for r in results] == ["ok"], results
    assert ours != address and not ours.endswith(address.rsplit(":", 1)[1])
    # Still up, one node, and only the two probes ever connected to it as drivers.
    assert _probe(address, env) == "nodes 1 jobs 2"
