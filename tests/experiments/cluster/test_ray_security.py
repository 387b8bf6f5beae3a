"""A local `ablate` is not exposed: while a real grid runs, every socket that a process of its Ray
(this process as the driver, GCS, raylet, agents, Tune's and the trial's workers) listens on is
a loopback address, and the GCS refuses a client without the cluster's token.

Ray 2.60 binds its gRPC servers to the wildcard address unless the node's IP is 127.0.0.1, and
replaces a requested 127.0.0.1 by the host's LAN address; `connection._loopback_only` keeps
127.0.0.1 (see there). The dashboard is not started at all. With both, nothing of a local run
listens on 0.0.0.0, ::, or a LAN address.
"""

import ipaddress
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import yaml
from diffseg3d.experiments.cluster.runner import run_grid

pytestmark = pytest.mark.slow


def _is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback (::ffff:127.0.0.1, how a gRPC server on an
    IPv6 socket bound to 127.0.0.1 shows); 0.0.0.0 and :: are exposed."""
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def test_loopback_addresses_only():
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("::ffff:127.0.0.1")
    for exposed in ("0.0.0.0", "::", "192.0.2.2", "::ffff:10.0.0.1", "fe80::1%eth0"):
        assert not _is_loopback(exposed), exposed


class _ListenerLog:
    """Polls, in a thread, the listening TCP/UDP sockets of this process and all its
    descendants (a local Ray's processes are children of its driver)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str, int], int] = {}  # (process name, ip, port) -> pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.poll()

    def poll(self) -> None:
        me = psutil.Process()
        names = {}
        for proc in [me, *me.children(recursive=True)]:
            try:
                names[proc.pid] = " ".join(proc.cmdline()[:2]) or proc.name()
            except psutil.Error:
                continue
        for conn in psutil.net_connections(kind="inet"):
            listening = conn.status == psutil.CONN_LISTEN or (
                conn.type == socket.SOCK_DGRAM and not conn.raddr
            )
            if conn.pid in names and listening and conn.laddr:
                self.seen[(names[conn.pid], conn.laddr.ip, conn.laddr.port)] = conn.pid


@pytest.mark.timeout(600)
def test_a_local_grid_listens_on_loopback_only_with_token_auth(tmp_path, local_ray):
    from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom

    if os.environ.get("RAY_AUTH_MODE", "token") != "token":
        pytest.skip("RAY_AUTH_MODE is set to something other than token in this environment")
    phantom = make_phantom(tmp_path / "phantom", PhantomSpec(cases=6, shape=(16, 16, 8)))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "security_test", "seeds": [0], "data_sets": {"phantom": "replaced"},
        "base": {"method": "diffusion"},
        "comparisons": [{"table": "1", "axes": {"diffusion.recycling": [True]}}],
    }))
    with _ListenerLog() as log:
        results = run_grid(grid, profile="smoke", data_override=phantom, out_dir=tmp_path / "o")
        log.poll()
    assert [r["status"] for r in results] == ["ok"], results

    names = " | ".join(sorted({name for name, _, _ in log.seen}))
    # The poll saw Ray's servers at all (else "nothing exposed" would prove nothing).
    assert "gcs_server" in names and "raylet" in names, log.seen
    assert any(pid == os.getpid() for pid in log.seen.values()), "driver gRPC server not seen"
    exposed = {key: pid for key, pid in log.seen.items() if not _is_loopback(key[1])}
    assert not exposed, f"listening on a non-loopback address: {exposed}"

    # Token authentication is on: a client with the wrong token is refused by the GCS, the
    # same client with Ray's generated token is let in.
    assert os.environ.get("RAY_AUTH_MODE") == "token"
    (gcs_port,) = {port for name, _, port in log.seen if "gcs_server" in name}
    gcs = f"127.0.0.1:{gcs_port}"
    probe = "import ray, sys; ray.init(address=sys.argv[1]); print('nodes', len(ray.nodes()))"
    # The probe is a second driver on this node: it too must take 127.0.0.1 as the node's IP.
    env = dict(os.environ, RAY_NUM_REDIS_GET_RETRIES="3", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    wrong = subprocess.run([sys.executable, "-c", probe, gcs], env={**env, "RAY_AUTH_TOKEN": "x"},
                           capture_output=True, text=True, timeout=180)
    assert wrong.returncode != 0 and "nodes" not in wrong.stdout
    assert "InvalidAuthToken" in wrong.stderr, wrong.stderr[-2000:]
    right = subprocess.run([sys.executable, "-c", probe, gcs],
                           env={**env, "RAY_AUTH_TOKEN": _ray_token()},
                           capture_output=True, text=True, timeout=180)
    assert right.returncode == 0 and "nodes 1" in right.stdout, right.stderr[-2000:]


def _ray_token() -> str:
    """The token Ray generated (or found) for the local run: RAY_AUTH_TOKEN, the file at
    RAY_AUTH_TOKEN_PATH, else `~/.ray/auth_token`."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token"
    return Path(path).read_text().strip()
