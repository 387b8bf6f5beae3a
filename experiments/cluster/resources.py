"""What one trial asks Ray for, whether the cluster can ever give it, and the trial's JAX env.

The one place that turns a config's `resources` section into Ray's request: local runs
(`runner.py`), the cluster files (`ray_cluster.yaml`, `ray_cluster_gcp_tpu.yaml`) and the
KubeRay manifests (`k8s/`) all quote `trial_resources`, and tests check that what those files
advertise matches it. Pure functions (no Ray calls) so the rules are testable without a cluster;
`runner.py` feeds them `ray.nodes()` and `ray.cluster_resources()`.

The section (docs/ARCHITECTURE.md, `config.ResourcesConfig`):
- `resources.accelerator`: `cpu` | `gpu` | `tpu`;
- `resources.accelerators_per_trial`: GPUs (a fraction < 1 packs several trials on one GPU,
  which needs JAX's memory preallocation capped per process) or TPU chips (1, 2, 4, 8: Ray's
  TPU sizes; the trial uses every chip it gets through `core/train/sharding.py`, batch split
  over the chips, the paper's one volume per TPU core);
- `resources.cpus_per_trial`: CPU cores Ray reserves (JAX trials on a CPU-only machine ask for
  1, since two busy XLA processes on two cores already slow each other down, DESIGN.md).

Ray's names: Tune's request uses `cpu` and `gpu` for Ray's built-in `CPU`/`GPU` resources, and
`TPU` (Ray's native accelerator resource, advertised by TPU VM hosts and by KubeRay pods with
`google.com/tpu`) as a custom key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from diffseg3d.experiments.config.errors import ConfigError
from diffseg3d.experiments.config.sections import ResourcesConfig

# JAX preallocates 75% of a GPU by default; with `accelerators_per_trial = f < 1` GPUs each trial
# gets `f * GPU_MEMORY_HEADROOM` of the memory so that 1/f trials plus CUDA contexts fit.
GPU_MEMORY_HEADROOM = 0.9

#: Key of Tune's request -> name of the resource in `ray.nodes()` / `ray.cluster_resources()`.
RAY_NAMES = {"cpu": "CPU", "gpu": "GPU", "TPU": "TPU"}

#: How the fit error tells the user to get the missing resource.
_HOW_TO_ADD = {
    "GPU": "GPU nodes (ray_cluster.yaml, k8s/ GPU group, or `ray start --num-gpus N`)",
    "TPU": "TPU hosts (ray_cluster_gcp_tpu.yaml, k8s/ TPU group, or a TPU VM running "
    "`ray start`, which advertises its chips as TPU)",
    "CPU": "CPU cores",
}


class ResourceRequestError(ConfigError):
    """A trial asks for resources that no node of the Ray cluster has (it would wait forever).

    A `ConfigError`: the fix is in the config/profile (or the cluster), and `diffseg3d ablate`
    prints it as one line and exits 2 instead of a traceback."""


def trial_resources(config: Mapping) -> dict[str, float]:
    """Tune's resource request for one trial from its config (as a dict).

    `{"cpu": c}` (CPU trial), `{"cpu": c, "gpu": g}` (GPU trial) or `{"cpu": c, "TPU": n}`
    (TPU trial: n chips of one host). Raises ValueError naming the key and value on a bad
    section (same rules as `config.ResourcesConfig`, for raw dicts that skipped it).
    """
    section = ResourcesConfig.model_validate(dict(config.get("resources") or {}))
    request = {"cpu": float(section.cpus_per_trial)}
    count = float(section.accelerators_per_trial or 1.0)
    if section.accelerator == "gpu":
        request["gpu"] = count
    elif section.accelerator == "tpu":
        request["TPU"] = count
    return request


def node_resources(request: Mapping[str, float]) -> dict[str, float]:
    """The request under Ray's node resource names (`{"CPU": .., "GPU": ..}`), as a node, a
    cluster file's `resources:` or a KubeRay pod must advertise to hold it."""
    return {RAY_NAMES.get(key, key): float(value) for key, value in request.items()}


def check_cluster_fits(
    requests: Mapping[str, Mapping[str, float]],
    nodes: Iterable[Mapping],
    cluster_resources: Mapping[str, float],
) -> None:
    """Raise ResourceRequestError unless every trial's request fits on at least one alive node.

    requests: trial name -> `trial_resources(...)`; nodes: `ray.nodes()` entries
    (`{"Alive": bool, "Resources": {"CPU": .., "GPU": .., "TPU": ..}}`); cluster_resources:
    `ray.cluster_resources()`, quoted in the message. A Tune trial is one actor, so it must fit
    on one node: 2 GPUs on each of two nodes cannot serve a 4-GPU trial, nor two 4-chip TPU
    hosts an 8-chip trial. Ray itself would leave such a trial PENDING forever, which is the
    hang this check replaces.
    """
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    problems, missing = [], set()
    for name, req in requests.items():
        need = node_resources(req)
        if not any(all(r.get(k, 0.0) >= v for k, v in need.items()) for r in alive):
            problems.append(f"{name}: {dict(req)}")
            missing |= {k for k, v in need.items() if v > max((r.get(k, 0.0) for r in alive),
                                                             default=0.0)}
    if not problems:
        return
    shown = "; ".join(problems[:5])
    if len(problems) > 5:
        shown += f"; ... ({len(problems)} trials)"
    largest = ", ".join(
        f"{max((r.get(k, 0.0) for r in alive), default=0.0):g} {k}s" for k in ("GPU", "TPU", "CPU")
    )
    add = " and ".join(_HOW_TO_ADD[k] for k in ("GPU", "TPU", "CPU") if k in missing)
    raise ResourceRequestError(
        f"no node of the Ray cluster can run these trials: {shown}. Largest node has {largest}; "
        f"ray.cluster_resources() = {dict(sorted(cluster_resources.items()))}. Lower "
        "resources.accelerators_per_trial / resources.cpus_per_trial or change "
        "resources.accelerator (e.g. --profile quick on a CPU machine), or add "
        f"{add or 'a node that holds one whole trial'}."
    )


def trial_env(
    resources: Mapping[str, float], *, intra_trial_threads: bool = True
) -> dict[str, str]:
    """Environment a trial must set before JAX is imported in its worker process.

    - `gpu` in (0, 1): XLA_PYTHON_CLIENT_MEM_FRACTION = gpu * GPU_MEMORY_HEADROOM, so that the
      1/gpu trials Ray packs on one GPU do not each preallocate 75% of it.
    - `TPU`: nothing; Ray sets TPU_VISIBLE_CHIPS (and the chip bounds) for the chips it gave
      the trial, and the trial shards its batch over every device JAX then sees.
    - neither: JAX_PLATFORMS=cpu, so JAX neither probes for nor grabs an accelerator.
    - CPU trial asking for 1 core with `intra_trial_threads=False`: XLA's Eigen thread pool off
      (`--xla_cpu_multi_thread_eigen=false`; DESIGN.md: `--intra_op_parallelism_threads` kills
      the process), so concurrent 1-CPU trials do not fight for cores.
    """
    env: dict[str, str] = {}
    gpu = resources.get("gpu", 0.0)
    if 0 < gpu < 1:
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{gpu * GPU_MEMORY_HEADROOM:.3f}"
    if gpu == 0 and not resources.get("TPU", 0.0):
        env["JAX_PLATFORMS"] = "cpu"
        if resources.get("cpu", 1.0) <= 1 and not intra_trial_threads:
            env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"
    return env
