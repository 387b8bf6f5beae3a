"""`benchmarks.probes.init_compile`: both compiles are timed and the two init programs agree bit for
bit (the property `state.run_init` relies on)."""

import json

import pytest

from benchmarks.probes import init_compile


@pytest.mark.slow  # several seconds: in make test, not in the edit-test loop
def test_init_compile_record_is_bit_identical_and_timed(tmp_path):
    out = tmp_path / "init.json"
    init_compile.main(["--shape", "8", "8", "4", "--channels", "8", "--classes", "3",
                       "--batch", "1", "--json", str(out)])
    record = json.loads(out.read_text())
    assert record["bit_identical"] is True
    assert record["compile_default_s"] > 0 and record["compile_init_options_s"] > 0
    assert record["shape"] == [8, 8, 4] and record["channels"] == [8]
    assert record["init_options"] == {"xla_backend_optimization_level": 1}
