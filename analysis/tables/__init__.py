"""Tables: LaTeX (`latex` building blocks, `main_table` for Tables 1-4, `supplements`,
`sampling`) and `comparisons_csv` (every comparison's statistics as one CSV)."""
