"""The shared plain-text table float of `tables.latex`."""

import pandas as pd
from diffseg3d.analysis.tables.latex import FOOTNOTESIZE, plain_table_latex


def _frame():
    return pd.DataFrame({"Data set": ["a_b"], "Setting": ["x&y"], "p": ["$<$0.001"]})


def test_named_columns_are_escaped_and_the_others_keep_their_markup():
    latex = plain_table_latex(_frame(), caption="Cap $x$", label="tab:t", column_format="llc",
                              escape_columns=["Data set", "Setting"])
    body = latex.split("\\midrule")[1].split("\\bottomrule")[0].strip()
    assert body == "a\\_b & x\\&y & $<$0.001 \\\\"
    assert latex.startswith("\\begin{table}\n\\centering\n\\caption{Cap $x$}\n\\small\n"
                            "\\label{tab:t}\n")
    assert "\\begin{tabular}{llc}" in latex and "\\toprule" in latex


def test_without_columns_every_cell_is_escaped_and_the_size_is_chosen():
    latex = plain_table_latex(_frame(), caption="c", label="tab:t", column_format="llc",
                              table_styles=FOOTNOTESIZE)
    assert "\\$<\\$0.001" in latex
    assert "\\footnotesize\n\\setlength{\\tabcolsep}{3pt}\n" in latex
    assert "\\small" not in latex
