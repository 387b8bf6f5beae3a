"""`--seeds` of `diffseg3d ablate` and `diffseg3d tables`: a list of ints, absent by default."""

import pytest
from diffseg3d.cli.main import build_parser


@pytest.mark.parametrize("command, rest", [
    ("ablate", ["paper"]),
    ("tables", ["--experiment", "paper", "--out", "results/paper"]),
])
def test_seeds_parse_as_ints_and_default_to_the_grids(command, rest):
    parser = build_parser(command)
    assert parser.parse_args([command, *rest, "--seeds", "0", "1", "2"]).seeds == [0, 1, 2]
    assert parser.parse_args([command, *rest]).seeds is None
    with pytest.raises(SystemExit):
        parser.parse_args([command, *rest, "--seeds", "one"])
