"""Records of a GPU benchmark run -> the headline figures of ``gpu_latest.json`` and the targets.

Figures (None when the records needed are missing or failed; ``figure_notes`` says why):

- ``lax3d_over_s2d_step_256x256x48``: the batch-1 step in ``lax3d`` / in ``lax3d_s2d`` (the
  accelerator pick), same run: above 1, the pick is faster; ``step_s_256x256x48_b1`` holds
  both step times by form;
- ``hlo_flagged``: per form, the convs `hlo_summary` flags in that step's optimized HLO (a cuDNN
  forward conv with a window above 3 in the backward pass): 0 for a healthy step;
- ``step_over_forward_256x256x48``: the pick's batch-1 step / one forward pass (<= 4);
- ``paper_step_s``, ``paper_peak_gib``, ``paper_compile_s``: the ``paper`` profile's step at
  256x256x48 (batch 8 as accumulated microbatches, as the profile sets it; if that failed, the
  first forced accumulation variant that ran, named in ``paper_step_config``): median step,
  device peak, init + compile (<= 0.75 s on an H200 or <= 1.0 s on an H100, <= 72 GiB, <= 60 s);
- ``monai_over_ours_paper_b8``: MONAI's step at the same batch and accumulation / ours (>= 1);
- ``monai_over_ours_256x256x48`` / ``..._recycling_...`` / ``monai_over_ours_192x128x128``:
  MONAI's step time / ours at the same size and batch (>= 1: ours no slower);
- ``amos_step_s``: the profile's step at 192x128x128, 16 classes;
- ``test_gpu``: passed / failed / errors / skipped of the core tests on the GPU (no failure);
- ``bench_wall_s``: the whole run (<= 360 s).
"""

from __future__ import annotations

import importlib.metadata
import platform

from benchmarks.gpu.plan import GPU_FORM
from benchmarks.throughput import ratio

#: The keys gpu_latest.json always holds (`unmeasured_result` writes them all as None).
REQUIRED_KEYS = (
    "device", "measured_at", "versions", "lax3d_over_s2d_step_256x256x48",
    "step_s_256x256x48_b1", "hlo_flagged", "hlo_dilated_volume", "step_over_forward_256x256x48",
    "paper_step_s",
    "paper_peak_gib", "paper_compile_s", "monai_over_ours_paper_b8",
    "monai_over_ours_256x256x48", "monai_over_ours_recycling_256x256x48", "amos_step_s",
    "test_gpu",
)
#: Figure -> (comparison, bound) of the targets; ``paper_step_s``'s bound is the H200's (an
#: H100 gets `H100_PAPER_STEP_S`).
TARGETS = {
    "step_over_forward_256x256x48": ("<=", 4.0),
    "paper_step_s": ("<=", 0.75),
    "paper_peak_gib": ("<=", 72.0),
    "paper_compile_s": ("<=", 60.0),
    "monai_over_ours_paper_b8": (">=", 1.0),
    "monai_over_ours_256x256x48": (">=", 1.0),
    "monai_over_ours_recycling_256x256x48": (">=", 1.0),
    "monai_over_ours_192x128x128": (">=", 1.0),
    "bench_wall_s": ("<=", 360.0),
}
H100_PAPER_STEP_S = 1.0
VERSION_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "torch", "monai")


def _ok(records: list[dict], **match) -> dict | None:
    """The first record with status ok whose fields equal ``match``."""
    for r in records:
        if r.get("status") == "ok" and all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def _why(records: list[dict], part: str) -> str:
    """Why a part gave no figure: its records' statuses and errors, or not run."""
    mine = [r for r in records if r.get("part") == part]
    if not mine:
        return f"part {part} not run"
    return "; ".join(f"{r['name']}: {r['status']} {r.get('error', '')}".strip() for r in mine)


def _ratio(num: dict | None, den: dict | None) -> float | None:
    """Step time of record ``num`` / that of ``den``; None when either is missing."""
    return ratio(num and num["step_s"], den and den["step_s"])


def _profile_record(records: list[dict], part: str) -> dict | None:
    """The profile step as the profile sets it, else the first forced variant that ran."""
    return _ok(records, part=part, accum_forced=False) or _ok(records, part=part)


def _monai_pair(records: list[dict], part: str, recycling: bool,
                ours_part: str | None = None) -> tuple[dict | None, dict | None]:
    """(MONAI record, ours in the accelerator form at its size and batch) for a side-by-side
    part."""
    monai = _ok(records, part=part, kind="monai")
    if monai is None:
        return None, None
    ours = next((r for r in records if r.get("status") == "ok" and r.get("kind") == "step"
                 and r.get("size") == monai.get("size") and r.get("batch") == monai.get("batch")
                 and bool(r.get("recycling")) == recycling and r.get("conv_impl") == GPU_FORM
                 and (ours_part is None or r.get("part") in (ours_part, part))), None)
    return monai, ours


def _step_b1(records: list[dict], form: str) -> dict | None:
    return _ok(records, part="step_b1", conv_impl=form)


def _hlo_count(records: list[dict], key: str) -> dict | None:
    """Form -> number of convs in the HLO summary list ``key`` of its step; None without any
    HLO summary."""
    out = {r["conv_impl"]: len(r["hlo_summary"][key]) for r in records
           if r.get("status") == "ok" and r.get("part") == "hlo" and "hlo_summary" in r}
    return out or None


def figures(records: list[dict]) -> tuple[dict, dict]:
    """``(figures, notes)``: the headline figures of `records` and, per None figure, why."""
    pick, old = _step_b1(records, GPU_FORM), _step_b1(records, "lax3d")
    paper, amos = _profile_record(records, "paper_step"), _profile_record(records, "amos_step")
    monai_paper = _ok(records, part="monai_paper")
    pairs = {
        "monai_over_ours_256x256x48": ("monai_plain", _monai_pair(records, "monai_plain", False)),
        "monai_over_ours_recycling_256x256x48":
            ("monai_recycling", _monai_pair(records, "monai_recycling", True, "recycling")),
        "monai_over_ours_192x128x128": ("monai_amos", _monai_pair(records, "monai_amos", False)),
    }
    tests = _ok(records, part="test_gpu")
    steps = {r["conv_impl"]: r["step_s"] for r in (pick, old) if r is not None}
    out = {
        "lax3d_over_s2d_step_256x256x48": _ratio(old, pick),
        "step_s_256x256x48_b1": steps or None,
        "hlo_flagged": _hlo_count(records, "flagged"),
        "hlo_dilated_volume": _hlo_count(records, "dilated_volume"),
        "step_over_forward_256x256x48": ratio(pick and pick["step_s"],
                                              pick and pick.get("forward_s")),
        "paper_step_s": paper and paper["step_s"],
        "paper_peak_gib": paper and paper.get("device_peak_gib"),
        "paper_compile_s": paper and paper["init_s"] + paper["compile_s"],
        "paper_step_config": paper and paper["name"],
        "monai_over_ours_paper_b8": _ratio(monai_paper, paper),
        **{key: _ratio(*pair) for key, (_, pair) in pairs.items()},
        "amos_step_s": amos and amos["step_s"],
        "amos_step_config": amos and amos["name"],
        "test_gpu": tests and {k: tests[k] for k in ("passed", "failed", "errors", "skipped")},
    }
    parts = {"lax3d_over_s2d_step_256x256x48": ("step_b1",),
             "step_s_256x256x48_b1": ("step_b1",), "hlo_flagged": ("hlo",),
             "hlo_dilated_volume": ("hlo",),
             "step_over_forward_256x256x48": ("step_b1",),
             "paper_step_s": ("paper_step",), "paper_peak_gib": ("paper_step",),
             "paper_compile_s": ("paper_step",), "amos_step_s": ("amos_step",),
             "monai_over_ours_paper_b8": ("paper_step", "monai_paper"),
             "test_gpu": ("test_gpu",),
             **{key: (part, "recycling") if "recycling" in key else (part,)
                for key, (part, _) in pairs.items()}}
    notes = {key: "; ".join(_why(records, p) for p in parts[key])
             for key in parts if out[key] is None}
    if paper is not None and out["paper_peak_gib"] is None:
        notes["paper_peak_gib"] = "the backend reports no device memory statistics (CPU)"
    return out, notes


def targets(figs: dict, device: str | None = None) -> dict:
    """Per target: ``{"target": "<= 0.75", "value": v, "pass": bool | None}`` (None: not
    measured); ``paper_step_s``'s bound is `H100_PAPER_STEP_S` on an H100 ``device``;
    ``test_gpu`` passes with tests run and none failed or in error."""
    out = {}
    for key, (op, bound) in TARGETS.items():
        if key == "paper_step_s" and device and "H100" in device:
            bound = H100_PAPER_STEP_S
        v = figs.get(key)
        ok = None if v is None else (v <= bound if op == "<=" else v >= bound)
        out[key] = {"target": f"{op} {bound:g}", "value": v, "pass": ok}
    t = figs.get("test_gpu")
    out["test_gpu"] = {"target": "passed > 0, failed + errors == 0", "value": t,
                       "pass": None if t is None else t["passed"] > 0
                       and t["failed"] + t["errors"] == 0}
    return out


def versions(records: list[dict], driver: dict | None = None) -> dict:
    """Installed versions (package metadata, nothing imported: jaxlib and every ``jax-cuda*``
    plugin distribution included), python, CUDA / cuDNN as the child processes reported them
    (JAX's platform version and its CUDA plugin's runtime, driver, cuDNN and cuBLAS versions;
    torch's CUDA and cuDNN), and ``driver`` (``nvidia-smi``'s driver version, GPU, memory)."""
    out = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    out["cuda_plugins"] = {
        d.metadata["Name"]: d.version for d in importlib.metadata.distributions()
        if (d.metadata["Name"] or "").lower().replace("_", "-").startswith("jax-cuda")} or None
    jax_rec = next((r for r in records if r.get("platform_version")), None)
    plugin_rec = next((r for r in records if r.get("cuda_versions")), None)
    torch_rec = next((r for r in records if r.get("cuda")), None)
    out["cuda"] = {"jax_platform": jax_rec and jax_rec["platform_version"],
                   "jax_plugin": plugin_rec and plugin_rec["cuda_versions"],
                   "torch": torch_rec and torch_rec["cuda"],
                   "cudnn_torch": torch_rec and torch_rec.get("cudnn")}
    out["driver"] = driver
    return out


def device(records: list[dict]) -> str | None:
    """The device name the JAX children reported (``NVIDIA H200``; ``cpu`` on the CPU)."""
    rec = next((r for r in records if r.get("status") == "ok" and r.get("device")), None)
    return rec and rec["device"]


def unmeasured_result(reason: str, written_at: str) -> dict:
    """``gpu_latest.json`` when no GPU measured anything: every figure and target None, the
    reason in ``unmeasured`` and the date it was written."""
    figs = {key: None for key in REQUIRED_KEYS}
    figs.update({k: None for k in TARGETS}, paper_step_config=None, amos_step_config=None,
                monai_over_ours_192x128x128=None)
    return {**figs, "unmeasured": reason, "written_at": written_at, "small": False,
            "targets": targets(figs), "records": []}
