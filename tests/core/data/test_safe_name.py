"""Names that become paths: one validation, and PreparedDataset refuses escaping names."""

import json

import pytest
from diffseg3d.core.data import DataError, PreparedDataset
from diffseg3d.core.data.phantom import PhantomSpec, make_phantom
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


@pytest.fixture
def phantom_root(tmp_path):
    return make_phantom(tmp_path / "ph", PhantomSpec(cases=4, shape=(16, 16, 8)))


def _edit_meta(root, edit):
    meta = json.loads((root / "dataset.json").read_text())
    edit(meta)
    (root / "dataset.json").write_text(json.dumps(meta))


def test_prepared_dataset_refuses_an_escaping_name(phantom_root):
    _edit_meta(phantom_root, lambda meta: meta.__setitem__("name", "../../EVILNAME"))
    with pytest.raises(DataError, match=r"dataset\.json: key 'name' '\.\./\.\./EVILNAME'"):
        PreparedDataset.load(phantom_root, verify="none")


def test_prepared_dataset_refuses_an_escaping_case_id(phantom_root):
    def edit(meta):
        old = meta["splits"]["test"][0]
        meta["splits"]["test"][0] = "../../../EVILCASE"
        meta["cases"]["../../../EVILCASE"] = meta["cases"].pop(old)
    _edit_meta(phantom_root, edit)
    with pytest.raises(DataError, match=r"case id '\.\./\.\./\.\./EVILCASE'"):
        PreparedDataset.load(phantom_root, verify="none")
