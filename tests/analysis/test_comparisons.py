"""Which runs feed which table: by tag, or by the paper's settings when runs carry no tags."""

import pytest
from diffseg3d.analysis.comparisons import TABLES_BY_ID, runs_for_table, setting_label

from .synthetic_runs import SETTINGS, synthetic_frame

EXPECTED = {  # table -> settings feeding it (synthetic_runs.SETTINGS names)
    "table1_recycling": {"default", "no-recycling"},
    "table2_diffusion_vs_unet": {"default", "unet"},
    "table3a_output": {"default", "eps"},
    "table3b_dice_loss": {"default", "no-dice"},
    "table3c_train_steps": {"default", "1000-steps"},
}


@pytest.mark.parametrize("tagged", [True, False])
@pytest.mark.parametrize("table_id", sorted(EXPECTED))
def test_runs_for_table_by_tag_and_by_paper_settings(table_id, tagged):
    frame = synthetic_frame(n_cases=2)
    if not tagged:
        frame = frame.assign(tables="")
    rows = runs_for_table(frame, TABLES_BY_ID[table_id])
    assert set(rows["trial"].str.removesuffix("-s0")) == EXPECTED[table_id]


def test_setting_labels_name_every_axis_that_differs():
    labels = {name: setting_label(type("Row", (), axes)) for name, (axes, _, _) in
              SETTINGS.items()}
    assert labels["default"] == "Diffusion (mask, recycling, 5 steps)"
    assert labels["eps"] == "Diffusion (noise, recycling, 5 steps)"
    assert labels["no-dice"] == "Diffusion (mask, recycling, CE only, 5 steps)"
    assert labels["unet"] == "U-Net"
    assert len(set(labels.values())) == len(labels)
