"""divcap harness: diversity x capacity sweeps for e-commerce LLM domain adaptation.

    harness plan  sweeps/smoke.yaml            # expand the grid, validate, estimate
    harness sweep sweeps/smoke.yaml            # run it on Ray Tune, write results/<name>/
    harness analyze results/smoke              # report.md, figures/, summary.json

Light on import: torch, transformers and ray are imported only by the modules that need them.
"""

__version__ = "0.1.0"
