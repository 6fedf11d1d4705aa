"""Adapter fine-tuning: a trial's rows -> batches -> trained adapters, on one process or several.

`loop` holds the training loop (train_adapter: each optimiser step's forward and backward passes,
the learning-rate schedule, the micro-batch plan) and the held-out loss; `batching` turns rows into
tokenised examples and the micro-batches of each step, padded or packed; `losses` holds the chunked
and fused cross-entropy on labelled positions only; `levers` the speed and memory levers
(activation checkpointing, per-layer compile, fused AdamW, the attention kernel) and what train.*
chose of them; `micro_batch` picks micro_batch auto from a memory model and a device probe; `ranks`
runs the data-parallel ranks of one trial (torch.distributed), helpers started as
`python -m harness.training.ranks`.
"""
