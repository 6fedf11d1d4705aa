"""One trial, no Ray: setup -> train -> evaluate -> save, always ending in a record.

`run` holds run_trial (a TrialSpec -> a record written atomically, a failed one too) and the helper
ranks' entry, `harness.trial.run:train_rank`; `oom` the training attempt, retried on out of memory
with a smaller split of the same step; `monitor` what happens at each loss report (W&B, the
held-out loss, the reporter, intermediate adapters) and the final adapter saved; `environment` the
device and the record's meta (versions, host, git commit); `faults` the deliberate faults of
HARNESS_FAULTS that the fault-handling tests inject.
"""
