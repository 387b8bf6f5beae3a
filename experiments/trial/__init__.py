"""diffseg3d.experiments.trial: one trial in one process: `build` (config -> model, schedule,
steps), `run` (`run_trial`: the linear train/validate/test trial), `checkpoint`, `scoring`,
`sampling_eval` and `montage`. Knows nothing of Ray."""
