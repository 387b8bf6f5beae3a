"""diffseg3d.analysis: runs -> tidy table -> statistics -> LaTeX tables, summary.md and figures.

Modules, in data-flow order:
- `schema`: tidy columns, axis params and their casting from MLflow strings (via the run record,
  `diffseg3d.experiments.record`; with `grid`, the only experiments modules the analysis imports).
- `collect`: MLflow experiment or CSV folder -> `Collection` (tidy frame, runs, problems).
- `expected`: grid trials without a usable run.
- `comparisons`: the paper's tables (axis, levels, which runs feed each), setting labels.
- `pairing`: per-case scores (class mean, then seed mean) and pairing on common cases.
- `stats`: paired t-test, Wilcoxon, CI, Holm (scipy / statsmodels).
- `spearman`: ROI size vs Dice per class with a permutation p-value.
- `table_data`: the numbers behind each table; `tables`: LaTeX (Styler.to_latex, booktabs);
  `summary`: summary.md; `figures`, `examples`: plots and the Fig. 2 montage.
- `report`: writes everything for one collection (the `diffseg3d tables` command is
  `diffseg3d.cli.tables`).
"""
