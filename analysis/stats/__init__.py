"""Statistics of the comparisons (scipy / statsmodels; nothing they provide is re-implemented).

- `paired`: paired t-test, Wilcoxon signed-rank, Holm adjustment, p-value formatting.
- `bootstrap`: BCa bootstrap interval of the mean paired difference over cases.
- `mixed_model`: linear mixed model with case and seed (training run) effects.
- `power`: the smallest mean paired difference a study detects with 80% power (`mde80`).
- `verdict`: significant / could have seen an effect of size X / too small to tell.
- `spearman`: ROI size vs Dice per class with a permutation p-value.

`ALPHA` is the paper's significance level (section 4: paired t-test, alpha = 0.01); every test,
interval (1 - ALPHA = 99%) and power computation uses it unless `diffseg3d tables --alpha` says
otherwise.
"""

ALPHA = 0.01
