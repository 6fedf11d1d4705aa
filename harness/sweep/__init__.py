"""The sweep: the Ray Tune driver (`driver`) and the checks before launch (`preflight`)."""
