"""The sweep spec: what a sweep file declares, checked and expanded into trials before anything runs.

`schema` holds the spec types (SweepSpec, TrialSpec and their blocks), the compute-budget helpers and
the content hashes that trial and cell ids are made of; `load` reads a sweep YAML with `--set`
overrides, reports every problem at once and makes local paths absolute; `validate` holds the
semantic checks that `load` reports; `expand` turns a sweep into its trials (the grid, the
baseline); `estimate` sizes a sweep for `harness plan` (parameters, memory, time). Nothing here
imports torch or ray: `harness plan` and sweep expansion run it before anything is loaded.
"""
