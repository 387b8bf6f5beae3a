"""The headline numbers of `latest.json` (its output contract), from per-config records.

Every value is a ratio or a number measured in the same run; a key whose configurations failed
or were skipped is None, never a stale number. Targets ride along so the
printed summary says pass/fail.
"""

from __future__ import annotations

from benchmarks.throughput import ratio

#: key -> (comparison, bound): the targets on the 2-core CPU.
TARGETS = {
    "recycling_over_plain": ("<=", 1.35),
    "speedup_vs_reference_64x64x16": (">=", 2.5),
    "speedup_vs_reference_96x96x32": (">=", 2.5),
    "fraction_of_peak_96x96x32": (">=", 0.5),
    "compile_s": ("<=", 30.0),
    "inference_over_forward": ("<=", 5.5),
    "peak_rss_gib_256x256x48": ("<=", 8.0),
}


def _ok(records: dict, name: str) -> dict | None:
    rec = records.get(name)
    return rec if rec and rec.get("status") == "ok" else None


def _field(records: dict, name: str, key: str):
    rec = _ok(records, name)
    return None if rec is None else rec.get(key)


def summarise(records: dict[str, dict], paired: dict[str, dict] | None = None) -> dict:
    """Contract keys from records keyed by config name (see `configs.plan` for the names) and
    the interleaved pairs of `configs.PAIRS` (key -> `benchmarks.cpu.paired` result).

    - recycling_over_plain: step time recycling / plain diffusion at 64x64x16, interleaved in
      one process (`paired`); recycling_over_plain_separate: the same from the two separate
      per-config processes;
    - speedup_vs_reference_{64x64x16,96x96x32}: reference step time / ours (plain diffusion);
    - fraction_of_peak_96x96x32: our diffusion step's XLA FLOPs / time / fp32 peak;
    - compile_s: compile time of our diffusion training step at 64x64x16 (compile_s_max: the
      largest over our training steps in the run);
    - inference_over_forward: 5-step sampling time / one forward pass at 64x64x16;
    - peak_rss_gib_256x256x48: peak host RSS of the one remat step at 256x256x48;
      planned_peak_gib_256x256x48: XLA's buffer plan for it (also when too big to run).
    """
    step = lambda name: _field(records, name, "step_s")
    ours_train = [
        r["compile_s"] for r in records.values()
        if r.get("status") == "ok" and r["workload"] == "train" and r["model"] == "ours"
    ]
    pair = (paired or {}).get("recycling_over_plain") or {}
    return {
        "recycling_over_plain": pair.get("b_over_a") if pair.get("status") == "ok" else None,
        "recycling_over_plain_separate": ratio(step("train_recycling_64x64x16"),
                                               step("train_diffusion_64x64x16")),
        "speedup_vs_reference_64x64x16": ratio(step("reference_train_diffusion_64x64x16"),
                                               step("train_diffusion_64x64x16")),
        "speedup_vs_reference_96x96x32": ratio(step("reference_train_diffusion_96x96x32"),
                                               step("train_diffusion_96x96x32")),
        "fraction_of_peak_96x96x32": _field(records, "train_diffusion_96x96x32",
                                            "fraction_of_peak"),
        "compile_s": _field(records, "train_diffusion_64x64x16", "compile_s"),
        "compile_s_max": max(ours_train) if ours_train else None,
        "inference_over_forward": ratio(step("sample5_64x64x16"), step("forward_64x64x16")),
        "peak_rss_gib_256x256x48": _field(records, "memory_remat_256x256x48", "peak_rss_gib"),
        "planned_peak_gib_256x256x48": _planned_peak(records.get("memory_remat_256x256x48")),
    }


def _planned_peak(record: dict | None) -> float | None:
    """XLA's planned peak (GiB) of a record, whether or not the step was run."""
    plan = (record or {}).get("xla_memory_gib") or {}
    return plan.get("planned_peak")


def verdicts(summary: dict) -> dict[str, str]:
    """``key -> "pass" | "FAIL" | "missing"`` against `TARGETS`."""
    out = {}
    for key, (op, bound) in TARGETS.items():
        value = summary.get(key)
        if value is None:
            out[key] = "missing"
        else:
            out[key] = "pass" if (value <= bound if op == "<=" else value >= bound) else "FAIL"
    return out
