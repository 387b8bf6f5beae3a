"""Records of a GPU benchmark run -> the headline figures of ``gpu_latest.json`` and #10's targets.

Figures (None when the records needed are missing or failed; ``figure_notes`` says why):

- ``step_over_forward_256x256x48``: batch-1 train step / one forward pass, same run (<= 4);
- ``paper_step_s``, ``paper_peak_gib``, ``paper_compile_s``: the ``paper`` profile's step at
  256x256x48 (batch 8, as the profile sets it; if that failed, the first forced accumulation
  variant that ran, named in ``paper_step_config``): median step, device peak, init + compile
  (<= 0.75 s, <= 72 GiB, <= 60 s);
- ``monai_over_ours_256x256x48`` / ``..._recycling_...`` / ``monai_over_ours_192x128x128``:
  MONAI's step time / ours at the same size and batch (>= 1: ours no slower);
- ``amos_step_s``: the profile's step at 192x128x128, 16 classes;
- ``test_gpu``: passed / failed / errors / skipped of the core tests on the GPU (no failure);
- ``bench_wall_s``: the whole run (<= 480 s).
"""

from __future__ import annotations

import importlib.metadata
import platform

from benchmarks.throughput import ratio

#: The keys #10 requires in gpu_latest.json (`unmeasured_result` writes them all as None).
REQUIRED_KEYS = (
    "device", "measured_at", "versions", "step_over_forward_256x256x48", "paper_step_s",
    "paper_peak_gib", "paper_compile_s", "monai_over_ours_256x256x48",
    "monai_over_ours_recycling_256x256x48", "amos_step_s", "test_gpu",
)
#: Figure -> (comparison, bound) of #10's targets.
TARGETS = {
    "step_over_forward_256x256x48": ("<=", 4.0),
    "paper_step_s": ("<=", 0.75),
    "paper_peak_gib": ("<=", 72.0),
    "paper_compile_s": ("<=", 60.0),
    "monai_over_ours_256x256x48": (">=", 1.0),
    "monai_over_ours_recycling_256x256x48": (">=", 1.0),
    "monai_over_ours_192x128x128": (">=", 1.0),
    "bench_wall_s": ("<=", 480.0),
}
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
    """(MONAI record, ours at its size and batch) for a side-by-side part."""
    monai = _ok(records, part=part, kind="monai")
    if monai is None:
        return None, None
    ours = next((r for r in records if r.get("status") == "ok" and r.get("kind") == "step"
                 and r.get("size") == monai.get("size") and r.get("batch") == monai.get("batch")
                 and bool(r.get("recycling")) == recycling
                 and (ours_part is None or r.get("part") in (ours_part, part))), None)
    return monai, ours


def figures(records: list[dict]) -> tuple[dict, dict]:
    """``(figures, notes)``: the headline figures of `records` and, per None figure, why."""
    forward, step = _ok(records, part="forward"), _ok(records, part="step_b1")
    paper, amos = _profile_record(records, "paper_step"), _profile_record(records, "amos_step")
    pairs = {
        "monai_over_ours_256x256x48": ("monai_plain", _monai_pair(records, "monai_plain", False)),
        "monai_over_ours_recycling_256x256x48":
            ("monai_recycling", _monai_pair(records, "monai_recycling", True, "recycling")),
        "monai_over_ours_192x128x128": ("monai_amos", _monai_pair(records, "monai_amos", False)),
    }
    tests = _ok(records, part="test_gpu")
    out = {
        "step_over_forward_256x256x48": _ratio(step, forward),
        "paper_step_s": paper and paper["step_s"],
        "paper_peak_gib": paper and paper.get("device_peak_gib"),
        "paper_compile_s": paper and paper["init_s"] + paper["compile_s"],
        "paper_step_config": paper and paper["name"],
        **{key: _ratio(*pair) for key, (_, pair) in pairs.items()},
        "amos_step_s": amos and amos["step_s"],
        "amos_step_config": amos and amos["name"],
        "test_gpu": tests and {k: tests[k] for k in ("passed", "failed", "errors", "skipped")},
    }
    parts = {"step_over_forward_256x256x48": ("forward", "step_b1"),
             "paper_step_s": ("paper_step",), "paper_peak_gib": ("paper_step",),
             "paper_compile_s": ("paper_step",), "amos_step_s": ("amos_step",),
             "test_gpu": ("test_gpu",),
             **{key: (part, "recycling") if "recycling" in key else (part,)
                for key, (part, _) in pairs.items()}}
    notes = {key: "; ".join(_why(records, p) for p in parts[key])
             for key in parts if out[key] is None}
    if paper is not None and out["paper_peak_gib"] is None:
        notes["paper_peak_gib"] = "the backend reports no device memory statistics (CPU)"
    return out, notes


def targets(figs: dict) -> dict:
    """Per target: ``{"target": "<= 0.75", "value": v, "pass": bool | None}`` (None: not
    measured); ``test_gpu`` passes with tests run and none failed or in error."""
    out = {}
    for key, (op, bound) in TARGETS.items():
        v = figs.get(key)
        ok = None if v is None else (v <= bound if op == "<=" else v >= bound)
        out[key] = {"target": f"{op} {bound:g}", "value": v, "pass": ok}
    t = figs.get("test_gpu")
    out["test_gpu"] = {"target": "passed > 0, failed + errors == 0", "value": t,
                       "pass": None if t is None else t["passed"] > 0
                       and t["failed"] + t["errors"] == 0}
    return out


def versions(records: list[dict]) -> dict:
    """Installed versions (package metadata, nothing imported), python, and CUDA as the child
    processes reported it (JAX's platform version, torch's CUDA)."""
    out = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    jax_rec = next((r for r in records if r.get("platform_version")), None)
    torch_rec = next((r for r in records if r.get("cuda")), None)
    out["cuda"] = {"jax_platform": jax_rec and jax_rec["platform_version"],
                   "torch": torch_rec and torch_rec["cuda"],
                   "cudnn_torch": torch_rec and torch_rec.get("cudnn")}
    return out


def device(records: list[dict]) -> str | None:
    """The device name the JAX children reported (``NVIDIA H200``; ``cpu`` on the CPU)."""
    rec = next((r for r in records if r.get("status") == "ok" and r.get("device")), None)
    return rec and rec["device"]


def unmeasured_result(reason: str, written_at: str) -> dict:
    """``gpu_latest.json`` when no GPU measured anything: every figure and target None, the
    reason in ``unmeasured`` and the date it was written."""
    figs = {key: None for key in REQUIRED_KEYS}
    figs.update({k: None for k in TARGETS}, paper_step_config=None, amos_step_config=None)
    return {**figs, "unmeasured": reason, "written_at": written_at, "small": False,
            "targets": targets(figs), "records": []}
