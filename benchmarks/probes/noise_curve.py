"""Why a diffusion checkpoint segments as it does, step by step (noise vs mask prediction).

For one trial checkpoint (`<trial>/checkpoints/step_N`) of the quick profile's diffusion U-Net
on a prepared data set, on one split:

- one-step: x_k = q_sample(ground truth, k) for every step index k; Dice of argmax x0_hat
  (eq. 10 for noise prediction, unclipped), rms(eps_hat - eps) and rms(x0_hat - x0);
- the head: singular values of the U-Net's linear head (features -> C outputs) and, when it has
  fewer features than classes, the unit normal n of its output subspace;
- ceilings that need no network: Dice of argmax(x0 - a_k z n) with a_k = sqrt((1-abar_k)/abar_k)
  (the error eq. 10 makes from unpredictable noise along n) and of argmax(x0 + sigma_1 z) (the
  noise the `fixed_large` / `fixed_small` step k = 1 leaves in x at t = 1, which a noise
  model's last step moves by only sqrt(1 - abar_1) eps_hat);
- the 5-step sampler's Dice with DDPM fixed_large / fixed_small and DDIM, clipped, 2 keys.

Prints one JSON object. docs/NOISE_PREDICTION.md has the dated results.

    .venv/bin/python -m benchmarks.probes.noise_curve runs/trials/<trial>/checkpoints/step_0000600 \
        --output eps --data data/phantom --split valid
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from diffseg3d.core.diffusion import (
    eps_from_x0,
    label_to_mask,
    make_schedule,
    mask_to_label,
    model_time,
    q_sample,
    x0_from_output,
)
from diffseg3d.core.diffusion.gaussian import posterior_variance
from diffseg3d.core.infer.sampling import make_sampler
from diffseg3d.core.metrics.dice import dice_per_class
from diffseg3d.core.models.unet import UNet

SAMPLERS = ("ddpm:fixed_large", "ddpm:fixed_small", "ddim:fixed_large")


def mean_dice(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Mean over cases of the mean foreground Dice; pred, labels (N, *S) int."""
    return float(np.nanmean([np.nanmean(dice_per_class(p, y, num_classes))
                             for p, y in zip(np.asarray(pred), labels, strict=True)]))


def read_params(step_folder: Path):
    """The parameters of a trial checkpoint folder (`step_N/orbax/N/state`)."""
    states = sorted((step_folder / "orbax").glob("*/state"))
    if not states:
        raise FileNotFoundError(f"{step_folder}: no orbax/<step>/state inside")
    return ocp.StandardCheckpointer().restore(states[-1].resolve())["params"]


def ceilings(labels: np.ndarray, num_classes: int, normal: np.ndarray | None, schedule) -> dict:
    """Network-free Dice ceilings (module docstring), one draw of z each."""
    rng = np.random.default_rng(0)
    x0 = 2.0 * np.eye(num_classes)[labels] - 1.0
    abar = np.asarray(schedule.alphas_cumprod, np.float64)
    gain = np.sqrt((1.0 - abar) / abar)
    out = {"gain_sqrt_1mabar_over_abar": gain.round(4).tolist()}
    if normal is not None:
        out["head_normal_noise_per_k"] = [
            round(mean_dice(np.argmax(x0 - g * rng.standard_normal(labels.shape)[..., None]
                                      * normal, -1), labels, num_classes), 3) for g in gain]
    for kind in ("fixed_large", "fixed_small"):
        sigma = float(np.sqrt(posterior_variance(schedule, jnp.asarray([1]), kind)[0]))
        pred = np.argmax(x0 + sigma * rng.standard_normal(x0.shape), -1)
        out[f"last_step_{kind}"] = {"sigma_1": round(sigma, 4),
                                    "dice": round(mean_dice(pred, labels, num_classes), 3)}
    return out


def probe(step_folder: Path, output: str, data: Path, split: str, channels: tuple[int, ...],
          num_res_blocks: int) -> dict:
    images = jnp.asarray(np.load(data / "cache" / f"{split}_images.npy")[..., None], jnp.float32)
    labels = np.load(data / "cache" / f"{split}_labels.npy").astype(np.int32)
    # dataset.json names the foreground classes; background is class 0
    num_classes = len(json.loads((data / "dataset.json").read_text())["class_names"]) + 1
    model = UNet(num_classes=num_classes, channels=channels, num_res_blocks=num_res_blocks,
                 diffusion=True)
    params = read_params(step_folder)
    schedule = make_schedule(1000, 5)
    apply = jax.jit(lambda x_t, t: model.apply({"params": params}, images, x_t, t))
    x0 = label_to_mask(jnp.asarray(labels), num_classes)
    result: dict = {"checkpoint": str(step_folder), "output": output, "split": split,
                    "one_step": {}}
    for k in range(schedule.num_steps):
        kk = jnp.full((len(labels),), k, jnp.int32)
        eps = jax.random.normal(jax.random.key(k), x0.shape)
        x_t = q_sample(schedule, x0, kk, eps)
        out = apply(x_t, model_time(schedule, kk))
        x0_hat = x0_from_output(schedule, output, out, x_t, kk, clip_x0=False)
        eps_hat = out if output == "eps" else eps_from_x0(schedule, x_t, kk, x0_hat)
        result["one_step"][k] = {
            "dice": round(mean_dice(mask_to_label(x0_hat), labels, num_classes), 3),
            "rms_eps_err": round(float(jnp.sqrt(jnp.mean((eps_hat - eps) ** 2))), 4),
            "rms_x0_err": round(float(jnp.sqrt(jnp.mean((x0_hat - x0) ** 2))), 3),
        }
    head = np.asarray(params["head"]["kernel"], np.float64)  # (features, C)
    _, singular, vt = np.linalg.svd(head)
    normal = vt[-1] if head.shape[0] < head.shape[1] else None
    result["head"] = {"shape": list(head.shape), "singular_values": singular.round(4).tolist(),
                      "normal": None if normal is None else normal.round(3).tolist()}
    result["ceilings"] = ceilings(labels, num_classes, normal, schedule)
    result["samplers"] = {}
    for name in SAMPLERS:
        method, variance = name.split(":")
        sample = make_sampler(model, schedule, output=output, variance=variance, method=method,
                              num_classes=num_classes, clip_x0=True)
        result["samplers"][name] = round(float(np.mean(
            [mean_dice(sample(params, images, jax.random.key(s)), labels, num_classes)
             for s in range(2)])), 3)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step_folder", type=Path, help="<trial>/checkpoints/step_N")
    parser.add_argument("--output", choices=("eps", "x0"), required=True)
    parser.add_argument("--data", type=Path, default=Path("data/phantom"))
    parser.add_argument("--split", default="valid", choices=("train", "valid", "test"))
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--num-res-blocks", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.step_folder, args.output, args.data, args.split,
                           tuple(args.channels), args.num_res_blocks)))


if __name__ == "__main__":
    main()
