"""Data parallel: one step on a 2- or 8-device CPU mesh equals the same step on one device.

8 devices at batch 8 is the paper's layout (TPU v3-8: one volume per core) and what a TPU trial
on a v5e-8/v6e-8 host runs (experiments/cluster/resources.py); the fake devices come from
`--xla_force_host_platform_device_count`."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from diffseg3d.core.train.sharding import make_mesh, shard_batch

SCRIPT = textwrap.dedent(
    """
    import sys
    import jax, numpy as np
    from diffseg3d.core.diffusion import make_schedule
    from diffseg3d.core.train import (compile_train_step, create_train_state, make_mesh,
                                      make_optimizer, make_train_step, replicate, shard_batch,
                                      shard_batches)
    from diffseg3d.core.train.steps import make_loss_fn
    from tests.core.train.tiny_model import TinyDenoiser

    n_dev, B = int(sys.argv[1]), int(sys.argv[2])
    assert len(jax.local_devices()) == n_dev, jax.local_devices()
    model = TinyDenoiser(num_classes=3)
    tx, lr = make_optimizer(1e-2, 1, 10, weight_decay=1e-4, grad_clip_norm=1.0)
    step = make_train_step(model, tx, lr, method="diffusion", schedule=make_schedule(1000, 5),
                           recycling=True)
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, (B, 8, 8, 4)).astype(np.int32)
    batch = {"image": (label[..., None] + rng.standard_normal((B, 8, 8, 4, 1))).astype("f4"),
             "label": label}
    key = jax.random.key(3)

    def run(mesh):
        state = create_train_state(model, tx, jax.random.key(0), (B, 8, 8, 4, 1), True)
        jitted = jax.jit(step, donate_argnums=0)
        b = batch
        if mesh is not None:
            state, b = replicate(state, mesh), shard_batch(batch, mesh)
            n = mesh.devices.size
            assert len(b["image"].sharding.device_set) == n
            assert b["image"].addressable_shards[0].data.shape[0] == B // n
        for i in range(2):
            state, metrics = jitted(state, b, jax.random.fold_in(key, i))
        return jax.device_get(state.params), jax.device_get(metrics)

    p1, m1 = run(make_mesh(jax.local_devices()[:1]))
    p2, m2 = run(make_mesh())
    for name in m1:
        np.testing.assert_allclose(m1[name], m2[name], rtol=1e-5, atol=1e-7, err_msg=name)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The loss value and every gradient leaf, sharded batch vs one device.
    loss_fn = make_loss_fn(model, method="diffusion", schedule=make_schedule(1000, 5),
                           recycling=True)
    grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    params = create_train_state(model, tx, jax.random.key(0), (B, 8, 8, 4, 1), True).params
    mesh = make_mesh()
    (l1, _), g1 = grad(params, batch["image"], batch["label"], key)
    sharded = shard_batch(batch, mesh)
    (l2, _), g2 = grad(replicate(params, mesh), sharded["image"], sharded["label"], key)
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    try:
        shard_batch({"image": np.zeros((n_dev + 1, 2))}, make_mesh())
        raise SystemExit(f"batch {n_dev + 1} on {n_dev} devices was accepted")
    except ValueError as err:
        assert f"batch size {n_dev + 1}" in str(err), err
        assert f"number of devices {n_dev}" in str(err), err
    # the trial's loop on the mesh: the compiled step on the same two batches, from the host
    state = replicate(create_train_state(model, tx, jax.random.key(0), (B, 8, 8, 4, 1), True),
                      make_mesh())
    step_fn = compile_train_step(step)
    for i, b in enumerate(shard_batches(iter([batch, batch]), make_mesh())):
        state, _ = step_fn(state, b, jax.random.fold_in(key, i))
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(jax.device_get(state.params)),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    print("OK", float(m1["loss"]), float(m2["loss"]))
    """
)


@pytest.mark.slow  # a subprocess compiling the step on 2 and 8 fake devices: 137-155 s loaded
@pytest.mark.parametrize(("devices", "batch"), [(2, 4), (8, 8)])
def test_data_parallel_step_matches_one_device(devices, batch):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(devices), str(batch)], cwd=root,
                            env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("OK")


def test_batch_leaves_must_agree_on_batch_size():
    with pytest.raises(ValueError, match=r"disagree on the batch size: \[2, 3\]"):
        shard_batch({"image": np.zeros((2, 2)), "label": np.zeros((3,))}, make_mesh())
