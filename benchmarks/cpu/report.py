"""Plain-text table of benchmark records and the summary block `benchmarks.run` prints."""

from __future__ import annotations

from benchmarks.cpu.summary import TARGETS, verdicts

COLUMNS = (
    ("name", "{}", 44), ("step_s", "{:.3f}", 9), ("compile_s", "{:.1f}", 9),
    ("gflops", "{:.1f}", 8), ("fraction_of_peak", "{:.1%}", 7), ("peak_rss_gib", "{:.2f}", 8),
    ("load_before", "{}", 6),
)
HEADERS = ("config", "step s", "compile", "GFLOP/s", "peak", "RSS GiB", "load")


def _cell(record: dict, key: str, fmt: str) -> str:
    value = record.get(key)
    if key == "load_before" and value:
        value = value[0]
    if value is None:
        return "-"
    return fmt.format(value)


def format_table(records: list[dict]) -> str:
    """One line per record; failed or skipped configs show their status instead of numbers."""
    widths = [w for _, _, w in COLUMNS]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True))]
    for rec in records:
        if rec.get("status") != "ok":
            lines.append(f"{rec['name']:<44}  {rec.get('status')}: {rec.get('error', '')[:80]}")
            continue
        cells = [_cell(rec, key, fmt).ljust(w) for key, fmt, w in COLUMNS]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def format_summary(summary: dict) -> str:
    """Summary keys with their target and pass/FAIL/missing."""
    marks = verdicts(summary)
    lines = []
    for key, value in summary.items():
        text = "-" if value is None else f"{value:.3f}"
        target = TARGETS.get(key)
        goal = f"(target {target[0]} {target[1]}: {marks[key]})" if target else ""
        lines.append(f"{key:<32} {text:>9}  {goal}")
    return "\n".join(lines)
