"""Names that become paths: one validation (its use by PreparedDataset is in test_bad_input.py)."""

import pytest
from diffseg3d.core.data.safe_name import MAX_NAME_LENGTH, UnsafeNameError, check_safe_name


@pytest.mark.parametrize(
    "name", ["phantom", "prostate-mr", "amos_ct", "phantom_diffusion_x0_recycle-N_dice-Y_k5_s0",
             "case.001", "a+b=c", "x" * MAX_NAME_LENGTH])
def test_safe_names_pass_unchanged(name):
    assert check_safe_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [("../../EVILNAME", "must not start with '.'"), ("a/../b", "contain '..'"),
     ("a/b", "contains '/'"), ("a\\b", "contains"), (".hidden", "must not start with '.'"),
     ("", "is empty"), ("with space", "contains ' '"), ("x" * (MAX_NAME_LENGTH + 1), "characters"),
     ("tab\tname", "contains"), (None, "must be a string"), (7, "must be a string")])
def test_unsafe_names_are_refused_with_the_reason(name, reason):
    with pytest.raises(UnsafeNameError, match="data set name") as info:
        check_safe_name(name, what="data set name")
    assert reason in str(info.value)
