"""summary.md states the raw paired t-test p (the paper's criterion) and the Holm-adjusted one."""

import pytest
from diffseg3d.analysis.comparisons import TABLES_BY_ID
from diffseg3d.analysis.stats.paired import format_pvalue
from diffseg3d.analysis.summary import comparison_sentence, table_section
from diffseg3d.analysis.table_data import compute_table
from scipy import stats
from statsmodels.stats.multitest import multipletests

from .tables.test_main_table import AMOS_N, AMOS_Y, _two_data_set_frame


@pytest.fixture(scope="module")
def table1():
    return compute_table(_two_data_set_frame(), TABLES_BY_ID["table1_recycling"])


def test_sentence_gives_raw_and_holm_p_and_the_verdict_follows_the_raw_p(table1):
    raw = [stats.ttest_rel([0.8, 0.75, 0.95], [0.7, 0.6, 0.8]).pvalue,
           stats.ttest_rel(AMOS_Y, AMOS_N).pvalue]
    holm = multipletests(raw, method="holm")[1]
    sentence = comparison_sentence(table1, table1.comparison("amos-ct", "Y"))
    assert (f"paired t-test p = {format_pvalue(raw[1])} (unadjusted, as the paper reports it): "
            "significant at alpha = 0.01") in sentence
    assert f"t-test p = {format_pvalue(holm[1])} (not significant)" in sentence
    assert "Holm-adjusted over the table's comparisons" in sentence


def test_markdown_table_has_a_raw_row_with_the_mark_and_a_holm_row(table1):
    section = table_section(table1)
    raw_row = next(line for line in section.splitlines() if line.startswith("| p (t-test) |"))
    holm_row = next(line for line in section.splitlines()
                    if line.startswith("| p (t-test, Holm) |"))
    raw_amos = format_pvalue(stats.ttest_rel(AMOS_Y, AMOS_N).pvalue)
    assert f"{raw_amos}*" in raw_row and "*" not in holm_row
    assert "unadjusted as in the paper" in section
