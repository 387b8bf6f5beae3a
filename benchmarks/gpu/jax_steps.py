"""Our side of the GPU benchmark, measured inside one child process per configuration.

- `measure_step`: the plain (or recycling) diffusion train step of the paper U-Net (bf16,
  ``cfg.conv_impl``; ``core.train.make_train_step``, AdamW, state donated); with
  ``cfg.extra["forward"]`` also one forward pass of the same model and parameters
  (``forward_s``, for the step / forward ratio).
- `measure_profile_step`: the ``paper`` profile's train step exactly as a trial builds it
  (``experiments.config.layering.apply_profile`` -> ``experiments.trial.build``; augmentation,
  remat, bf16, batch 8 as accumulated microbatches).
- `measure_sample`: K-step sampling of one case (``core.infer.make_sampler``, one jitted scan).
- `compile_for_hlo`: compiles the batch-1 train step only, for its optimized HLO.

Where the parent sets ``GPU_BENCH_HLO_DIR``, the batch-1 steps (parts ``step_b1``, ``hlo``)
write their optimized HLO (``compiled.as_text()``) to ``<dir>/<config name>.txt``, which
`benchmarks.gpu.hlo_summary` reads: no second compile, and a step loaded from the persistent
compilation cache still has it.

Every record has ``init_s`` (parameters + optimiser state as one jitted program, compile
included, blocked until ready, as a trial initialises), ``compile_s``
(``jit(...).lower(...).compile()``), ``step_s`` (median of ``cfg.steps`` calls after
``cfg.warmup`` untimed ones, each ended by ``block_until_ready``), ``device_peak_gib``
(``jax.local_devices()[0].memory_stats()["peak_bytes_in_use"]``, None on CPU) and XLA's buffer
plan. Inputs are random: image ``(B, X, Y, Z, 1)`` float32, label ``(B, X, Y, Z)`` int32.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

from benchmarks.gpu.plan import GpuConfig
from benchmarks.throughput import median_seconds, xla_flops, xla_memory_gib

GIB = 2**30
#: Environment variable naming the folder the batch-1 steps write their optimized HLO to.
HLO_DIR_ENV = "GPU_BENCH_HLO_DIR"
#: Version getters of the CUDA plugin's ``_versions`` module (jax._src.lib.cuda_versions).
_CUDA_VERSION_GETTERS = ("cuda_runtime_get_version", "cuda_driver_get_version",
                         "cudnn_get_version", "cublas_get_version", "cuda_compute_capability")
#: The config's gradient-accumulation field (experiments/config/sections.py: TrainConfig).
ACCUM_FIELD = "train.grad_accum_steps"


def device_info() -> dict:
    """Backend, device kind (the GPU's name), platform version (CUDA) of this process."""
    dev = jax.local_devices()[0]
    try:
        from jax.extend.backend import get_backend

        platform_version = get_backend().platform_version
    except Exception:  # noqa: BLE001 -- informative only; older/newer jax may lack it
        platform_version = None
    from diffseg3d.core.models.conv import resolve_conv_impl

    return {"backend": jax.default_backend(), "device": dev.device_kind,
            "platform_version": platform_version, "conv_impl_auto": resolve_conv_impl("auto"),
            "cuda_versions": cuda_versions()}


def cuda_versions() -> dict | None:
    """CUDA runtime, driver, cuDNN, cuBLAS versions and compute capability as the CUDA plugin
    reports them (integers, e.g. cuDNN 91000 = 9.10.0); None without the plugin (CPU)."""
    try:
        from jax._src.lib import cuda_versions as mod
    except ImportError:
        return None
    if mod is None:
        return None
    out = {}
    for name in _CUDA_VERSION_GETTERS:
        try:
            out[name.replace("_get_version", "")] = getattr(mod, name)()
        except Exception:  # noqa: BLE001 -- a getter missing in this plugin version, or no GPU
            out[name.replace("_get_version", "")] = None
    return out


def device_peak_gib() -> float | None:
    """Peak device memory of this process in GiB where the backend tracks it; None on CPU."""
    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / GIB


def _seconds(fn: Callable, *args):
    """``(fn(*args) blocked until ready, wall seconds)``."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def _time_calls(compiled, args: tuple, advance: Callable, warmup: int, steps: int) -> list[float]:
    """Wall seconds of ``steps`` calls after ``warmup`` untimed ones; ``advance(out, args, i)``
    feeds call i's output back (a donated state must not be reused)."""
    times = []
    for i in range(warmup + steps):
        out, s = _seconds(compiled, *args)
        if i >= warmup:
            times.append(s)
        args = advance(out, args, i + 1)
    return times


def _unet(cfg: GpuConfig, diffusion: bool = True, remat: bool | None = None):
    from diffseg3d.core.models import UNet

    return UNet(num_classes=cfg.num_classes, channels=cfg.channels,
                num_res_blocks=cfg.num_res_blocks, diffusion=diffusion, conv_impl=cfg.conv_impl,
                remat=cfg.remat if remat is None else remat, dtype=jnp.bfloat16)


def _batch(cfg: GpuConfig, key: jax.Array) -> dict:
    """Random ``{"image": (B, *S, 1) f32, "label": (B, *S) i32}``."""
    k1, k2 = jax.random.split(key)
    shape = (cfg.batch, *cfg.size)
    return {"image": jax.random.normal(k1, (*shape, 1), jnp.float32),
            "label": jax.random.randint(k2, shape, 0, cfg.num_classes, jnp.int32)}


def write_hlo(cfg: GpuConfig, compiled) -> str | None:
    """Write ``compiled``'s optimized HLO to ``$GPU_BENCH_HLO_DIR/<cfg.name>.txt`` for the
    batch-1 steps (parts ``step_b1`` and ``hlo``); the path, or None when not asked."""
    folder = os.environ.get(HLO_DIR_ENV)
    if not folder or cfg.part not in ("step_b1", "hlo"):
        return None
    path = Path(folder) / f"{cfg.extra.get('step', cfg.name)}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(compiled.as_text())
    return str(path)


def _compiled_record(compiled, compile_s: float, times: list[float]) -> dict:
    step_s = median_seconds(times)
    return {"compile_s": compile_s, "step_s": step_s, "step_s_all": times,
            "flops": xla_flops(compiled.cost_analysis()),
            "xla_memory_gib": xla_memory_gib(compiled), "device_peak_gib": device_peak_gib()}


def _measure_train(cfg: GpuConfig, step: Callable, init: Callable[[jax.Array], object]) -> dict:
    """Init (timed), compile (timed) and time ``step(state, batch, key)`` with the state donated,
    as `core.train.loop.compile_train_step` jits it for a trial."""
    from diffseg3d.core.train.loop import compile_train_step

    key = jax.random.PRNGKey(0)
    state, init_s = _seconds(init, key)
    batch = _batch(cfg, jax.random.fold_in(key, 1))
    t0 = time.perf_counter()
    compiled = compile_train_step(step).lower(state, batch, key).compile()
    compile_s = time.perf_counter() - t0
    hlo_path = write_hlo(cfg, compiled)
    # A copy: the state is donated to the step.
    params = jax.tree.map(jnp.copy, state.params) if cfg.extra.get("forward") else None
    times = _time_calls(compiled, (state, batch, key),
                        lambda out, args, i: (out[0], args[1], jax.random.fold_in(key, i)),
                        cfg.warmup, cfg.steps)
    rec = _compiled_record(compiled, compile_s, times)
    if hlo_path:
        rec["hlo_text"] = hlo_path
    if params is not None:
        rec.update(_forward_record(cfg, params, batch["image"]))
    voxels = cfg.batch * cfg.size[0] * cfg.size[1] * cfg.size[2]
    return {"init_s": init_s, **rec, "init_plus_compile_s": init_s + compile_s,
            "voxels_per_s": voxels / rec["step_s"]}


def _explicit_step(cfg: GpuConfig):
    """(model, tx, step) of the paper U-Net's plain / recycling diffusion step (AdamW, clip)."""
    from diffseg3d.core.diffusion import make_schedule
    from diffseg3d.core.train import make_optimizer, make_train_step

    model = _unet(cfg)
    tx, lr = make_optimizer(1e-4, warmup_steps=100, total_steps=12500, weight_decay=1e-4,
                            grad_clip_norm=1.0)
    step = make_train_step(model, tx, lr, method="diffusion", recycling=cfg.recycling,
                           schedule=make_schedule(1000, 5))
    return model, tx, step


def _init_fn(model, tx, cfg: GpuConfig) -> Callable[[jax.Array], object]:
    """``key -> TrainState`` as a trial initialises it: the whole `create_train_state` as one
    jitted program (`core.train.state.run_init`, what ``experiments/trial/run.py`` calls)."""
    from diffseg3d.core.train.state import create_train_state, run_init

    init = functools.partial(create_train_state, model, tx,
                             image_shape=(cfg.batch, *cfg.size, 1), diffusion=True)
    return lambda key: run_init(init, key)


def measure_step(cfg: GpuConfig) -> dict:
    """Plain (``cfg.recycling`` False) or recycling diffusion train step, paper U-Net, bf16,
    in the form ``cfg.conv_impl`` (``conv_impl`` in the record: the form it resolved to)."""
    from diffseg3d.core.models.conv import resolve_conv_impl

    model, tx, step = _explicit_step(cfg)
    return {**_measure_train(cfg, step, _init_fn(model, tx, cfg)), "remat": cfg.remat,
            "recycling": cfg.recycling, "conv_impl": resolve_conv_impl(cfg.conv_impl)}


def _small_layer(cfg: GpuConfig) -> dict:
    """The overrides of the CPU rehearsal (tiny network and batch); {} at full size."""
    if not cfg.small:
        return {}
    return {"model": {"channels": list(cfg.channels), "num_res_blocks": cfg.num_res_blocks},
            "data": {"batch_size": cfg.batch}}


def profile_config(cfg: GpuConfig, profile: str = "paper"):
    """``(Config, ACCUM_FIELD)``: the profile over schema defaults, the small overrides, and
    ``cfg.accum`` microbatches forced when ``cfg.accum > 0``.

    The small rehearsal's batch (2) cannot take the paper profile's 8 microbatches, and a batch
    the microbatches do not divide is a config error: there the microbatches become
    gcd(profile's, batch), before validation.
    """
    from diffseg3d.experiments.config.layering import apply_profile, deep_merge, set_dotted
    from diffseg3d.experiments.config.schema import validate_config

    raw = deep_merge(apply_profile({}, profile, source="benchmarks.gpu").raw, _small_layer(cfg))
    section, name = ACCUM_FIELD.split(".")
    microbatches = int(raw.get(section, {}).get(name, 1))
    if cfg.small and cfg.batch % microbatches:
        raw = set_dotted(raw, ACCUM_FIELD, math.gcd(microbatches, cfg.batch))
    if cfg.accum:
        raw = set_dotted(raw, ACCUM_FIELD, cfg.accum)
    return validate_config(raw, source=f"profile {profile}"), ACCUM_FIELD


def measure_profile_step(cfg: GpuConfig) -> dict:
    """The ``paper`` profile's train step as a trial builds and jits it, ``cfg.size`` and
    ``cfg.num_classes`` (prostate or AMOS), the profile's batch."""
    from diffseg3d.experiments.trial import build

    config, field_name = profile_config(cfg)
    if config.data.batch_size != cfg.batch:
        raise ValueError(f"profile batch {config.data.batch_size} != configured {cfg.batch}")
    model = build.model(config, cfg.num_classes)
    tx, lr = build.optimizer(config)
    step = build.train_step(config, model, tx, lr, cfg.spacing)
    m = config.model
    return {**_measure_train(cfg, step, _init_fn(model, tx, cfg)),
            "profile": "paper", "accum_field": field_name,
            "accum": config.train.grad_accum_steps, "accum_forced": cfg.accum > 0,
            "profile_model": {"channels": list(m.channels), "num_res_blocks": m.num_res_blocks,
                              "remat": m.remat, "compute_dtype": m.compute_dtype,
                              "conv_impl": m.conv_impl},
            "augment": config.data.augment, "recycling": config.diffusion.recycling}


def _forward_record(cfg: GpuConfig, params, image: jax.Array) -> dict:
    """One diffusion forward pass ``model.apply(params, image, x_t, t)`` of ``cfg``'s U-Net
    (no remat), timed as the step is (7 calls after a warm one): ``forward_s`` (median),
    ``forward_compile_s``, ``forward_s_all``."""
    model = _unet(cfg, remat=False)
    key = jax.random.PRNGKey(2)
    x_t = jax.random.uniform(key, (*image.shape[:-1], cfg.num_classes), jnp.float32, -1.0, 1.0)
    t = jnp.full((image.shape[0],), 0.5, jnp.float32)

    def forward(params, image, x_t, t):
        return model.apply({"params": params}, image, x_t, t)

    args = (params, image, x_t, t)
    t0 = time.perf_counter()
    compiled = jax.jit(forward).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    times = _time_calls(compiled, args, lambda out, a, i: a, 1, 7)
    return {"forward_s": median_seconds(times), "forward_compile_s": compile_s,
            "forward_s_all": times}


def measure_sample(cfg: GpuConfig, sample_steps: int = 5) -> dict:
    """``sample_steps``-step DDPM sampling of ``cfg.batch`` case(s); ``step_s`` is one whole
    sampling call (``sample_steps`` forward passes in one jitted scan)."""
    from diffseg3d.core.diffusion import make_schedule
    from diffseg3d.core.infer import make_sampler
    from diffseg3d.core.train.state import init_params

    model = _unet(cfg, remat=False)
    key = jax.random.PRNGKey(0)
    params, init_s = _seconds(lambda k: init_params(model, k, (cfg.batch, *cfg.size, 1), True),
                              key)
    image = _batch(cfg, key)["image"]
    sampler = make_sampler(model, make_schedule(1000, sample_steps))
    t0 = time.perf_counter()
    compiled = jax.jit(sampler).lower(params, image, key).compile()
    compile_s = time.perf_counter() - t0
    times = _time_calls(compiled, (params, image, key),
                        lambda out, a, i: (a[0], a[1], jax.random.fold_in(key, i)),
                        cfg.warmup, cfg.steps)
    rec = _compiled_record(compiled, compile_s, times)
    return {"init_s": init_s, **rec, "sample_steps": sample_steps,
            "per_forward_s": rec["step_s"] / sample_steps}


def compile_for_hlo(cfg: GpuConfig) -> dict:
    """Compile (not run) the batch-1 plain train step as `measure_step` does and write its
    optimized HLO (`write_hlo`, as ``cfg.extra["step"]``'s text): for an ``hlo`` configuration
    whose step did not write it (timed out or skipped)."""
    from diffseg3d.core.train.loop import compile_train_step

    model, tx, step = _explicit_step(cfg)
    key = jax.random.PRNGKey(0)
    state, init_s = _seconds(_init_fn(model, tx, cfg), key)
    t0 = time.perf_counter()
    compiled = compile_train_step(step).lower(state, _batch(cfg, key), key).compile()
    return {"init_s": init_s, "compile_s": time.perf_counter() - t0,
            "hlo_text": write_hlo(cfg, compiled)}
