"""The sweep spec: a sweep YAML -> SweepSpec -> TrialSpecs, validated, with content-hashed ids.

`schema` holds the spec types, validation, expansion and ids; `estimate` the pre-launch estimates
of `harness plan`. Nothing in this package imports torch or ray.
"""
