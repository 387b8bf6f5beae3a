"""The paper's tables as comparisons: which axis varies, its levels, and which runs feed each.

A run feeds a table when its `diffseg3d.tables` tag names the table id (the grid decides). Runs
collected without any table tags (e.g. a CSV folder whose sidecars omit `tables`) fall back to
the table's `where` filter, so a plain set of runs still yields the tables it can.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """One paper table.

    table_id: file stem; also accepted as a `diffseg3d.tables` tag value.
    label: the grid's table label (`experiments/grids/*.yaml` `table:`), the usual tag value.
    title: caption start (paper wording).
    axis: tidy column that varies between the rows.
    levels: (value, row label) in row order; the first level is the reference every other level
      is compared against (the paper's "N"/baseline row).
    where: tidy column -> value filter used only when runs carry no table tags.
    paper_data_sets: the data sets of this table in the paper (absent ones are named).
    note: caption sentence on how the numbers were sampled (plain text, escaped when rendered).
    variant_rows: extra rows from the runs' sampling variants (`eval.samplers`, read into
      `Collection.sampling`): (axis value, variant, row label). A row shows the same runs as
      that level, sampled the other way; its cells are not compared, and where the level's runs
      did not log the variant (older runs) they read `NOT_LOGGED`.
    variant_note: caption sentence on the variant or shown rows (plain text), when any is shown.
    shown_levels: (axis value, row label) of rows shown only when runs have that value, with
      their own runs' cells and never compared (Table 2's nnU-Net row); such values are not
      taken as extra compared levels.
    header: the row-label column's name; None: the axis' (`AXIS_HEADERS`).
    """

    table_id: str
    label: str
    title: str
    axis: str
    levels: tuple[tuple[Any, str], ...]
    where: tuple[tuple[str, Any], ...] = ()
    paper_data_sets: tuple[str, ...] = ("prostate-mr", "amos-ct")
    note: str = ""
    variant_rows: tuple[tuple[Any, str, str], ...] = ()
    variant_note: str = ""
    shown_levels: tuple[tuple[Any, str], ...] = ()
    header: str | None = None


#: How every diffusion row of Tables 1-3 is sampled (the paper's text and its code disagree).
DEFAULT_SAMPLING_NOTE = (
    "Sampling (unless a grid changes it): DDPM over K = diffusion.sample_steps steps with "
    "variance beta_k ('fixed_large', the default, as the authors' released code); the paper's "
    "text states the posterior variance beta-tilde_k ('fixed_small'): Table 4 compares both."
)
TABLES: tuple[TableSpec, ...] = (
    TableSpec("table1_recycling", "1", "DDPM with recycling (Table 1).", "recycling",
              ((False, "N"), (True, "Y")),
              (("method", "diffusion"), ("output", "x0"), ("dice_loss", True),
               ("train_steps", 5)), note=DEFAULT_SAMPLING_NOTE),
    TableSpec("table2_diffusion_vs_unet", "2",
              "Comparison between diffusion models and non-diffusion models (Table 2).",
              "method", (("unet", "N"), ("diffusion", "Y")),
              (("dice_loss", True), ("output", "x0"), ("recycling", True),
               ("train_steps", 5)), note=DEFAULT_SAMPLING_NOTE,
              shown_levels=(("nnunet", "nnU-Net"),),
              variant_note="Row nnU-Net (beyond the paper): nnU-Net v2 on the same split and "
              "test cases with the same metrics; shown, not compared here (table2_nnunet "
              "compares both models against it)."),
    TableSpec("table3a_output", "3a", "Ablation (a): mask or noise prediction (Table 3a).",
              "output",
              (("eps", "Noise"), ("x0", "Mask")),
              (("method", "diffusion"), ("recycling", True), ("dice_loss", True),
               ("train_steps", 5)), ("prostate-mr",), DEFAULT_SAMPLING_NOTE,
              variant_rows=(("eps", "ddpm_fixed_small", "Noise (fixed_small)"),),
              variant_note=(
                  "Row Noise (fixed_small): the same noise-prediction runs sampled again with "
                  "the posterior variance beta-tilde_k of the paper's eq. 3 and the same test "
                  "key (their sampling/ddpm_fixed_small.csv); shown, not compared; "
                  "'not logged': runs from before that evaluation.")),
    TableSpec("table3b_dice_loss", "3b", "Ablation (b): Dice loss (Table 3b).", "dice_loss",
              ((False, "N"), (True, "Y")),
              (("method", "diffusion"), ("output", "x0"), ("recycling", True),
               ("train_steps", 5)), ("prostate-mr",), DEFAULT_SAMPLING_NOTE),
    TableSpec("table3c_train_steps", "3c", "Ablation (c): number of training steps (Table 3c).",
              "train_steps", ((1000, "1000"), (5, "5")),
              (("method", "diffusion"), ("output", "x0"), ("recycling", True),
               ("dice_loss", True)), ("prostate-mr",), DEFAULT_SAMPLING_NOTE),
)

#: Table 4 (beyond the paper): the default model's trained parameters sampled three ways within
#: one trial (`eval.samplers`), read from the runs' `sampling/<variant>.csv` into
#: `Collection.sampling`, whose `sampling` column is the axis. Not in `TABLES`: its rows are
#: not the per-run test rows of Tables 1-3.
SAMPLING_TABLE = TableSpec(
    "table4_sampling_variance", "4",
    "Sampling variance of the default model (Table 4, beyond the paper).", "sampling",
    (("ddpm_fixed_large", "DDPM fixed_large"), ("ddpm_fixed_small", "DDPM fixed_small"),
     ("ddim", "DDIM")),
    (("method", "diffusion"), ("output", "x0"), ("recycling", True), ("dice_loss", True),
     ("train_steps", 5)),
    note="Rows: the same trained parameters of the default model (recycling, mask prediction, "
    "Dice loss, K = 5 training steps) sampled with DDPM and variance beta_k ('fixed_large', "
    "the default and the released code's; the reference row), DDPM with the posterior "
    "variance beta-tilde_k ('fixed_small', the paper's text) and DDIM (eta = 0, no noise), "
    "with the same test noise key.",
)

#: The cell text of a variant row whose runs did not log the variant.
NOT_LOGGED = "not logged"

#: Beyond the paper: the default diffusion model and the U-Net each against nnU-Net (the
#: reference row), with Table 2's statistics, from the runs Table 2's label feeds (a grid's
#: `table: "2"` comparisons with `method: [diffusion, nnunet]` and `[unet, nnunet]`). Not in
#: `TABLES`: written only when nnU-Net runs exist.
NNUNET_TABLE = TableSpec(
    "table2_nnunet", "2", "Diffusion model and U-Net against nnU-Net (beyond the paper).",
    "method", (("nnunet", "nnU-Net"), ("diffusion", "Diffusion"), ("unet", "U-Net")),
    (("dice_loss", True), ("output", "x0"), ("recycling", True), ("train_steps", 5)),
    note=DEFAULT_SAMPLING_NOTE, header="Method")

DIFFUSION_ONLY_AXES = frozenset({"output", "recycling", "train_steps"})

TABLES_BY_ID: dict[str, TableSpec] = {t.table_id: t for t in TABLES}

# Row-label column names per axis (the paper's header cell above the row labels).
AXIS_HEADERS: dict[str, str] = {
    "recycling": "Recycling", "method": "Diffusion", "output": "Output",
    "dice_loss": "Dice loss", "train_steps": "Steps (training)", "sampling": "Sampling",
}


def axis_header(spec: TableSpec) -> str:
    """The row-label column's name of a table: its own `header`, else its axis'."""
    return spec.header or AXIS_HEADERS.get(spec.axis, spec.axis)


def runs_for_table(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Tidy rows feeding `spec`: by table tag, or by `spec.where` when no run has tags.

    Diffusion-only axes in `where` do not filter U-Net runs.
    """
    tagged = frame["tables"].fillna("").astype(str)
    if (tagged != "").any():
        wanted = {spec.table_id, spec.label}
        mask = tagged.str.split(",").apply(lambda ids: bool(wanted.intersection(ids)))
        return frame[mask]
    mask = pd.Series(True, index=frame.index)
    for column, value in spec.where:
        matches = frame[column] == value
        if column in DIFFUSION_ONLY_AXES:
            # A U-Net run still carries the flattened diffusion defaults; they mean nothing.
            matches |= frame["method"] != "diffusion"
        mask &= matches
    if spec.axis != "method":
        mask &= frame["method"] == "diffusion"
    return frame[mask]


def setting_label(row: Any) -> str:
    """Readable name of a method configuration (all axes but data set and seed).

    `row` is anything with the tidy axis attributes (a namedtuple row or a Series).
    """
    if row.method == "nnunet":
        return "nnU-Net"
    if row.method == "unet":
        return "U-Net" + ("" if bool(row.dice_loss) else " (CE only)")
    parts = ["mask" if row.output == "x0" else "noise"]
    parts.append("recycling" if bool(row.recycling) else "no recycling")
    if not bool(row.dice_loss):
        parts.append("CE only")
    parts.append(f"{int(row.train_steps)} steps")
    return "Diffusion (" + ", ".join(parts) + ")"


def add_setting_column(frame: pd.DataFrame) -> pd.DataFrame:
    """Copy of `frame` with a `setting` column (see `setting_label`)."""
    out = frame.copy()
    out["setting"] = [setting_label(r) for r in frame.itertuples(index=False)]
    return out
