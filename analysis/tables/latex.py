"""LaTeX building blocks of every table: escaping, display names, cell and p formats, the
Styler styles, the float of a plain-text table (`plain_table_latex`, shared by the
uncertainty, cost, sampling and Spearman tables), the minimal document the tests compile each
table in, and writing a file.

Tables are built with pandas `Styler.to_latex` (booktabs); every user string (data set, class,
setting names; notes in captions) goes through pandas' LaTeX escaping. Each file is a complete
`table` float that compiles in a minimal document needing only `booktabs`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from diffseg3d.analysis.stats.paired import format_pvalue

# Display names of known data sets (others are shown as they are, LaTeX-escaped).
DATA_SET_NAMES: dict[str, str] = {
    "prostate-mr": "Prostate MR", "amos-ct": "Abdominal CT", "phantom": "Phantom",
}
METRIC_HEADERS: dict[str, str] = {"dice": "Dice", "hd95": "HD95 (mm)", "nsd": "NSD"}
BOLD = "textbf: --rwrap;"  # Styler LaTeX css: wraps the cell as \textbf{...}
# Styler table style that emits `\small` after `\begin{table}`, so two data sets fit a page.
SMALL = [{"selector": "small", "props": ":;"}]
# Supplements have one column per setting (up to 6): smaller type and column gaps.
FOOTNOTESIZE = [{"selector": "footnotesize", "props": ":;"},
                {"selector": "setlength", "props": ":{\\tabcolsep}{3pt};"}]
EMPTY = "--"
# The user-named columns of plain-text tables, escaped when their other cells carry markup.
NAME_COLUMNS = ["Data set", "Setting"]
HD95_DEFINITION = (
    "HD95: 95th-percentile Hausdorff distance in mm (MONAI definition: surface voxels are the "
    "mask XOR its erosion, distances with the voxel spacing, maximum of the two directed 95th "
    "percentiles)"
)


def escape_latex(text: str) -> str:
    """Free text (names from data, not our own markup) with every LaTeX special escaped.

    The same escaping as `Styler.format(escape="latex")` (`\\ ~ ^ & % $ # _ { }`), reached
    through pandas' public Styler API rather than its private helper.
    """
    styler = pd.DataFrame([[str(text)]]).style.format(escape="latex")
    rendered = styler.hide(axis="index").hide(axis="columns").to_string()
    return rendered.removesuffix("\n")


def plain_table_latex(text: pd.DataFrame, *, caption: str, label: str, column_format: str,
                      table_styles: list[dict] = SMALL,
                      escape_columns: list[str] | None = None) -> str:
    """The `table` float of a frame of plain-text cells (no index, booktabs rules, centred).

    Cells are LaTeX-escaped: those of `escape_columns` only (the others carry our own markup,
    such as `$<$`), or every cell when it is None. `table_styles`: `SMALL` or `FOOTNOTESIZE`.
    The caption is our own text and is not escaped.
    """
    styler = text.style.hide(axis="index").format(escape="latex", subset=escape_columns)
    styler = styler.set_table_styles(table_styles, overwrite=False)
    return styler.to_latex(caption=caption, label=label, hrules=True,
                           position_float="centering", environment="table",
                           column_format=column_format)


def data_set_name(name: str) -> str:
    return DATA_SET_NAMES.get(name, name)


def format_cell(mean: float, std: float, *, pm: str = "$\\pm$") -> str:
    """`0.830 $\\pm$ 0.094`; three decimals like the paper; std `n/a` for a single case."""
    if not np.isfinite(mean):
        return EMPTY
    std_text = f"{std:.3f}" if np.isfinite(std) else "n/a"
    return f"{mean:.3f} {pm} {std_text}"


def format_p_latex(p: float, significant: bool) -> str:
    text = format_pvalue(p).replace("<", "$<$")
    return text + ("$^{*}$" if significant else "")


def number(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if np.isfinite(value) else EMPTY


def signed(value: float, digits: int = 3) -> str:
    """`+0.012` / `-0.004`; `--` for NaN."""
    return f"{value:+.{digits}f}" if np.isfinite(value) else EMPTY


MINIMAL_DOCUMENT = (
    "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=1.5cm]{geometry}\n"
    "\\begin{document}\n\\input{%s}\n\\end{document}\n"
)


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
