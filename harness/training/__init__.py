"""Adapter fine-tuning: rows -> batches -> a trained adapter, on one process or several.

`loop` holds the training loop; `losses` the chunked / fused cross-entropy; `micro_batch` the
micro_batch auto choice; `levers` the speed and memory levers; `ranks` the data-parallel ranks.
"""
