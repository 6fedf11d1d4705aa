"""The sweep: every trial of a sweep run on Ray Tune, records the source of truth, resumable.

`driver` holds run_sweep (plan, resume bookkeeping, one Tune run or Optuna's draws, records for
trials that died without one) and what `harness plan` reads of it (planned_trials, unplanned
records); `preflight` the checks before launch (evaluation files read, their metrics runnable);
`cluster` the Ray connection, local or an existing cluster probed first; `resources` what each
trial asks Ray for; `trainable` what runs on a Ray worker per trial; `outcomes` what a record means
to the driver (done, its metrics, the record of a trial that died); `search` Optuna over the grid's
factor choices and the ASHA scheduler.
"""
