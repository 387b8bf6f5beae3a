"""The peer of the side-by-side targets: MONAI's ``DiffusionModelUNet`` train step in torch.

Same size, classes, channels (32/64/128/256) and residual blocks (2) as ours, bf16 autocast,
``torch.backends.cudnn.benchmark = True``, AdamW with global-norm clipping 1.0, loss CE + soft
Dice on the logits (ours: CE + foreground Dice). Input: image and noisy mask concatenated on
channels, ``(B, 1 + C, X, Y, Z)``, and integer timesteps ``(B,)``.

Differences that MONAI's class does not let us remove (stated in the record): its bottleneck
always holds one self-attention block (``AttnMidBlock``; run here as one head with
``use_flash_attention=True``, i.e. torch's fused attention), and its down-sampling is a
stride-2 3x3x3 conv, up-sampling nearest-neighbour interpolation + 3x3x3 conv (ours: 2x2x2
stride-2 conv and 2x2x2 transposed conv). So MONAI does somewhat more work per step than ours.

A recycling step (paper 3.2, ``core/diffusion/recycling.py``) is one extra forward pass without
gradient (the stop-gradient prediction x0_hat at k + 1) before the training forward; for timing
only its cost matters, so the extra forward's output feeds the training input as ours does.

``cfg.accum > 0``: the batch as ``cfg.accum`` microbatches (gradients summed by ``backward``, one
clip and optimiser step), as the ``paper`` profile runs ours (``train.grad_accum_steps``); only
one microbatch of inputs is allocated.
"""

from __future__ import annotations

import time

from benchmarks.gpu.plan import GpuConfig
from benchmarks.throughput import median_seconds

GIB = 2**30


def _net(cfg: GpuConfig, device: str):
    from monai.networks.nets import DiffusionModelUNet

    return DiffusionModelUNet(
        spatial_dims=3, in_channels=1 + cfg.num_classes, out_channels=cfg.num_classes,
        channels=tuple(cfg.channels), attention_levels=(False,) * len(cfg.channels),
        num_res_blocks=cfg.num_res_blocks, norm_num_groups=min(8, cfg.channels[0]),
        num_head_channels=cfg.channels[-1], use_flash_attention=True,
    ).to(device)


def _loss(logits, label, num_classes: int):
    """CE + (1 - mean soft Dice over the foreground classes); logits (B, C, *S), label (B, *S)."""
    import torch
    import torch.nn.functional as F

    logits = logits.float()
    ce = F.cross_entropy(logits, label)
    probs = torch.softmax(logits, dim=1)[:, 1:]
    onehot = F.one_hot(label, num_classes).movedim(-1, 1)[:, 1:].float()
    dims = tuple(range(2, logits.ndim))
    dice = (2 * (probs * onehot).sum(dims) + 1e-5) / (probs.sum(dims) + onehot.sum(dims) + 1e-5)
    return ce + 1 - dice.mean()


def measure_monai(cfg: GpuConfig) -> dict:
    """Median seconds of the MONAI step (plain or ``cfg.recycling``) at ``cfg``'s size/batch."""
    import monai
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    t0 = time.perf_counter()
    net = _net(cfg, device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-4)
    init_s = time.perf_counter() - t0
    micro = max(cfg.accum, 1)
    mb = cfg.batch // micro
    image = torch.randn(mb, 1, *cfg.size, device=device)
    label = torch.randint(0, cfg.num_classes, (mb, *cfg.size), device=device)
    x_t = torch.rand(mb, cfg.num_classes, *cfg.size, device=device) * 2 - 1
    t = torch.randint(0, 1000, (mb,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        for _ in range(micro):
            with torch.autocast(device, dtype=torch.bfloat16):
                noisy = x_t
                if cfg.recycling:
                    with torch.no_grad():
                        x0_hat = torch.softmax(net(torch.cat([image, x_t], 1), t).float(), 1)
                    noisy = 0.5 * (x0_hat * 2 - 1) + 0.5 * x_t  # q_sample (cost only)
                loss = _loss(net(torch.cat([image, noisy], 1), t), label, cfg.num_classes)
            (loss / micro).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(cfg.warmup + cfg.steps):
        t0 = time.perf_counter()
        step()
        sync()
        if i >= cfg.warmup:
            times.append(time.perf_counter() - t0)
    return {
        "step_s": median_seconds(times), "step_s_all": times, "init_s": init_s,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "backend": device, "torch": torch.__version__, "monai": monai.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "device_peak_gib": torch.cuda.max_memory_allocated() / GIB if device == "cuda" else None,
        "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
        "recycling": cfg.recycling, "accum": micro,
        "differences": "MONAI bottleneck self-attention (1 head, fused); stride-2 3x3x3 down "
                       "conv; interpolate + 3x3x3 conv up",
    }
