"""What one trial asks Ray for, whether the cluster can ever give it, and the trial's JAX env.

Pure functions (no Ray calls) so the rules are testable without a cluster; `runner.py` feeds
them `ray.nodes()` and `ray.cluster_resources()`.

A trial's request comes from the config section `resources` (docs/ARCHITECTURE.md):
`resources.cpus_per_trial` (CPU cores Ray reserves; JAX trials on a CPU-only machine ask for
1, since two busy XLA processes on two cores already each run ~1.9x slower, DESIGN.md) and
`resources.gpus_per_trial` (0 = CPU trial; 1 = a whole GPU; a fraction in (0, 1) packs
several trials on one GPU, which needs JAX's memory preallocation capped per process).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from diffseg3d.experiments.config import ConfigError

# JAX preallocates 75% of a GPU by default; with `gpus_per_trial = f < 1` each trial gets
# `f * GPU_MEMORY_HEADROOM` of the memory so that 1/f trials plus CUDA contexts fit.
GPU_MEMORY_HEADROOM = 0.9


class ResourceRequestError(ConfigError):
    """A trial asks for resources that no node of the Ray cluster has (it would wait forever).

    A `ConfigError`: the fix is in the config/profile (or the cluster), and `diffseg3d ablate`
    prints it as one line and exits 2 instead of a traceback."""


def trial_resources(config: Mapping) -> dict[str, float]:
    """Ray resource request `{"cpu": c, "gpu": g}` for one trial from its config (as a dict).

    Raises ValueError naming the key when a value is negative, non-numeric, or a GPU count
    above 1 that is not an integer (Ray cannot split a request of e.g. 1.5 GPUs).
    """
    section = config.get("resources") or {}
    cpus = _number(section, "cpus_per_trial", default=1.0)
    gpus = _number(section, "gpus_per_trial", default=0.0)
    if gpus > 1 and not float(gpus).is_integer():
        raise ValueError(
            f"resources.gpus_per_trial={gpus}: fractions must be < 1 (several trials per GPU); "
            "above 1 use a whole number of GPUs"
        )
    return {"cpu": cpus, "gpu": gpus}


def _number(section: Mapping, key: str, *, default: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"resources.{key}={value!r}: expected a number")
    if value < 0:
        raise ValueError(f"resources.{key}={value!r}: must be >= 0")
    return float(value)


def check_cluster_fits(
    requests: Mapping[str, Mapping[str, float]],
    nodes: Iterable[Mapping],
    cluster_resources: Mapping[str, float],
) -> None:
    """Raise ResourceRequestError unless every trial's request fits on at least one alive node.

    requests: trial name -> `{"cpu": c, "gpu": g}`; nodes: `ray.nodes()` entries
    (`{"Alive": bool, "Resources": {"CPU": .., "GPU": ..}}`); cluster_resources:
    `ray.cluster_resources()`, quoted in the message. A Tune trial is one actor, so it must fit
    on one node: 2 GPUs on each of two nodes cannot serve a 4-GPU trial. Ray itself would leave
    such a trial PENDING forever, which is the hang this check replaces.
    """
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    best_gpu = max((r.get("GPU", 0.0) for r in alive), default=0.0)
    best_cpu = max((r.get("CPU", 0.0) for r in alive), default=0.0)
    problems = []
    for name, req in requests.items():
        fits = any(
            r.get("GPU", 0.0) >= req.get("gpu", 0.0) and r.get("CPU", 0.0) >= req.get("cpu", 0.0)
            for r in alive
        )
        if not fits:
            problems.append(f"{name}: {{'cpu': {req.get('cpu', 0)}, 'gpu': {req.get('gpu', 0)}}}")
    if problems:
        shown = "; ".join(problems[:5])
        if len(problems) > 5:
            shown += f"; ... ({len(problems)} trials)"
        raise ResourceRequestError(
            f"no node of the Ray cluster can run these trials: {shown}. Largest node has "
            f"{best_gpu:g} GPUs and {best_cpu:g} CPUs; ray.cluster_resources() = "
            f"{dict(sorted(cluster_resources.items()))}. Lower resources.gpus_per_trial / "
            "resources.cpus_per_trial (e.g. --profile quick on a CPU machine), or add GPU "
            "nodes (ray_cluster.yaml, or `ray start --address ... --num-gpus N`)."
        )


def trial_env(
    resources: Mapping[str, float], *, intra_trial_threads: bool = True
) -> dict[str, str]:
    """Environment a trial must set before JAX is imported in its worker process.

    - `gpu` in (0, 1): XLA_PYTHON_CLIENT_MEM_FRACTION = gpu * GPU_MEMORY_HEADROOM, so that the
      1/gpu trials Ray packs on one GPU do not each preallocate 75% of it.
    - `gpu == 0`: JAX_PLATFORMS=cpu, so JAX neither probes for nor grabs an accelerator.
    - CPU trial asking for 1 core with `intra_trial_threads=False`: XLA's Eigen thread pool off
      (`--xla_cpu_multi_thread_eigen=false`; DESIGN.md: `--intra_op_parallelism_threads` kills
      the process), so concurrent 1-CPU trials do not fight for cores.
    """
    env: dict[str, str] = {}
    gpu = resources.get("gpu", 0.0)
    if 0 < gpu < 1:
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{gpu * GPU_MEMORY_HEADROOM:.3f}"
    if gpu == 0:
        env["JAX_PLATFORMS"] = "cpu"
        if resources.get("cpu", 1.0) <= 1 and not intra_trial_threads:
            env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"
    return env
