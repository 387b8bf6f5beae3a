"""A tiny grid on a real local Ray prints the progress lines (the last one: all trials done)
and keeps Tune's tables and the workers' per-checkpoint lines off the console; Ray's worker log
files still hold them. `diffseg3d ablate --ray-output` selects the output."""

import re
from pathlib import Path

import pytest
import yaml
from diffseg3d.cli.main import build_parser
from diffseg3d.experiments.cluster.runner import run_grid

GRID = "progress_test"
STEPS = 4
#: Smoke-sized without a profile: 4 steps, a checkpoint (and a Tune report) every 2.
BASE = {
    "method": "unet", "data": {"batch_size": 2, "augment": False},
    "model": {"channels": [4, 8], "num_res_blocks": 1, "compute_dtype": "float32"},
    "optim": {"learning_rate": 1e-3, "warmup_steps": 1},
    "train": {"steps": STEPS, "log_every": 2, "checkpoint_every": 2, "eval_every": 0},
    "eval": {"save_predictions": 0}, "resources": {"cpus_per_trial": 1},
}
LINE = re.compile(rf"^grid {GRID}: (\d+)/2 done, (\d+) running.*, (\d+) pending \| "
                  r"\d+m\d\ds elapsed, (~\d+m\d\ds left|left: unknown)$")


def test_ablate_takes_ray_output_progress_by_default_or_full():
    parser = build_parser()
    assert parser.parse_args(["ablate", "paper"]).ray_output == "progress"
    assert parser.parse_args(["ablate", "paper", "--ray-output", "full"]).ray_output == "full"
    with pytest.raises(SystemExit):
        parser.parse_args(["ablate", "paper", "--ray-output", "loud"])


def test_run_grid_refuses_an_unknown_ray_output(tmp_path):
    with pytest.raises(ValueError, match="ray_output='loud'"):
        run_grid(tmp_path / "none.yaml", ray_output="loud")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_grid_prints_its_progress_and_not_the_workers_checkpoint_lines(
        tmp_path, local_ray, capfd):
    import os

    from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom

    data = make_phantom(tmp_path / "phantom", PhantomSpec(cases=6, shape=(16, 16, 8)))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "name": GRID, "seeds": [0, 1], "data_sets": {"phantom": "replaced"}, "base": BASE,
        "comparisons": [{"table": "1", "axes": {"method": ["unet"]}}]}))
    results = run_grid(grid, profile=None, data_override=data, out_dir=tmp_path / "runs",
                       max_concurrent=1)
    assert [r["status"] for r in results] == ["ok", "ok"], results

    out, err = capfd.readouterr()
    console = out + err
    lines = [line for line in err.splitlines() if line.startswith(f"grid {GRID}: ")
             and " done, " in line]
    assert lines and all(LINE.match(line) for line in lines), "\n".join(lines)
    # One line per Tune result (a line of a trial's result.json) and one per trial's end.
    reports = sum(len(f.read_text().splitlines())
                  for f in (tmp_path / "runs" / "ray_results").glob("*/*/result.json"))
    assert reports >= 4 and len(lines) == reports + 2, "\n".join(lines)
    assert lines[-1].startswith(f"grid {GRID}: 2/2 done, 0 running, 0 pending | ")
    assert any(re.search(rf"1 running \(\S+ 2/{STEPS}\)", line) for line in lines), lines
    assert "Checkpoint successfully created" not in console
    assert "Trial status" not in console  # Tune's status table (verbose 1)
    # The lines left the console only: the workers' own log files hold them.
    logs = Path(os.environ["RAY_TMPDIR"]).rglob("worker-*")
    assert any("Checkpoint successfully created" in p.read_text(errors="replace")
               for p in logs if p.is_file())
