"""The recorded plan (`benchmarks/results/gpu_plan.json`, written by `make gpu-plan`) against the
profiles it decided: the `paper` profile trains batch 8 in one pass without remat because every
configured train step of the paper grid fits an 80 GB card with 10 % to spare, and the figures
its comments cite are the recorded ones. Fails when a new plan no longer supports the profile,
or the profile's comments were not updated with it."""

import json
import re
from pathlib import Path

import pytest
import yaml
from diffseg3d.experiments.gpu_plan.plan import DEFAULT_OUT, FIT_MARGIN, PROFILE
from diffseg3d.experiments.gpu_plan.targets import CARDS

REPO = Path(__file__).resolve().parents[3]
PROFILES = REPO / "experiments" / "profiles"


@pytest.fixture(scope="module")
def plan() -> dict:
    return json.loads((REPO / DEFAULT_OUT).read_text())


def _configured_train_steps(plan: dict, card: str) -> list[dict]:
    return [r for r in plan["records"] if r["card"] == card and r["program"] == "train_step"
            and r["form"] == "as configured" and r["architecture"] == "imgx_v010"]


def test_every_card_is_planned_without_an_error_and_every_program_is_healthy(plan):
    assert plan["kind"] == "compile-time plan, not a measurement"
    for card in CARDS:
        rows = [r for r in plan["records"] if r["card"] == card]
        assert rows and all(r["status"] == "ok" and r["healthy"] for r in rows), card
        # One date per record, none later than the file's.
        assert all(r["date"] <= plan["date"] for r in rows)


def test_the_paper_profiles_batch_follows_from_the_planned_memory(plan):
    profile = yaml.safe_load((PROFILES / f"{PROFILE}.yaml").read_text())
    one_pass = (profile["train"].get("grad_accum_steps", 1), profile["model"].get("remat"))
    assert profile["data"]["batch_size"] == 8 and one_pass == (1, False)
    for card in CARDS:
        steps = _configured_train_steps(plan, card)
        assert len(steps) == 9, card  # the paper grid's trials on its two data sets
        for r in steps:
            assert (r["batch_size"], r["grad_accum_steps"], r["remat"]) == (8, 1, False)
            assert r["planned_bytes"] <= (1 - FIT_MARGIN) * r["memory_bytes"] and r["fits"]


def test_the_paper_profile_cites_the_recorded_largest_train_steps(plan):
    header = (PROFILES / f"{PROFILE}.yaml").read_text().split("\ndata:")[0]
    assert plan["date"] in header
    for card, words in (("h100_sxm", "on an H100 80 GB or H200"), ("a100_sxm_80",
                                                                    "on an A100 80 GB")):
        gib = max(r["planned_bytes"] for r in _configured_train_steps(plan, card)) / 2**30
        cited = re.search(rf"([\d.]+) GiB {words}", " ".join(header.replace("#", "").split()))
        assert cited and float(cited.group(1)) == round(gib, 1), (card, gib)


def test_the_counted_flops_agree_with_xla_tpus_own_count_where_it_gives_one(plan):
    tpu = [r for r in plan["records"] if r.get("target") == "tpu" and r.get("xla_flops")]
    assert tpu
    for r in tpu:
        # XLA:TPU also counts elementwise work: a little more, never 20x less.
        assert 0.9 * r["xla_flops"] <= r["flops"] <= r["xla_flops"], (r["card"], r["program"])
