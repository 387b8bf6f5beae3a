"""diffseg3d.analysis: runs -> tidy table -> statistics -> LaTeX tables, summary.md and figures.

Modules, in data-flow order:
- `schema`: tidy columns, axis params and their casting from MLflow strings (via the run record,
  `diffseg3d.experiments.tracking.record`; with `grid`, the only experiments modules the
  analysis imports).
- `collect`: MLflow experiment or CSV folder -> `Collection` (tidy frame, runs, problems).
- `expected`: grid trials without a usable run.
- `comparisons`: the paper's tables (axis, levels, which runs feed each), setting labels.
- `pairing`: per-case scores (class mean, then seed mean), per-(seed, case) scores, pairing on
  common cases.
- `stats/`: paired t-test, Wilcoxon, Holm, BCa bootstrap interval, mixed model (case and seed
  effects), mde80 (power), verdicts, Spearman (scipy / statsmodels).
- `table_data`: the numbers behind each table and comparison; `tables/`: LaTeX
  (Styler.to_latex, booktabs) and `comparisons.csv`; `summary`: summary.md; `figures/`,
  `examples`: plots and the Fig. 2 montage.
- `report`: writes everything for one collection (the `diffseg3d tables` command is
  `diffseg3d.cli.tables`).
"""
