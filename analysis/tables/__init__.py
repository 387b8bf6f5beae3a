"""Tables: LaTeX (`latex` building blocks, `main_table` for Tables 1-4, `supplements`,
`sampling`, `time_input` for Table 3c by time input) and `comparisons_csv` (every comparison's
statistics as one CSV)."""
