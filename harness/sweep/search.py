"""How the driver walks the grid beyond running every trial once: Optuna over the grid's factor
choices, and the ASHA scheduler that stops trials whose held-out loss trails.

    sampler = FactorSampler.for_sweep(spec, trials, records)       # Optuna only, no Ray
    searcher = factor_searcher(sampler, *search_metric(spec))      # its Tune adapter

A trial's factors are (data-set index, volume, capacity-setting index, seed): `factor_keys` maps
them to the grid's trial ids, so every draw is a trial of the grid, with the grid's id.
"""

from __future__ import annotations

from typing import Any

from harness.results import TrialRecord
from harness.spec.expand import capacity_grid, data_sets
from harness.spec.schema import SweepSpec, TrialSpec, search_metric
from harness.sweep.outcomes import is_done, outcome_metrics


# ---------------------------------------------------------------------------------------------
# Optuna over the grid's factor choices


FACTORS = ("data_set", "volume", "capacity", "seed")


def factor_keys(spec: SweepSpec, trials: list[TrialSpec]) -> dict[tuple, str]:
    """(data-set index, volume, capacity-setting index, seed) -> trial id, for the grid's real trials.
    A capacity setting's index is its place in the grid's capacity x rank (or budget) order, which
    is the same in every data cell even where the setting itself differs (multi_lora's groups)."""
    from harness.capacity.settings import capacity_settings

    sets = [(d, s) for d, s in data_sets(spec)]
    grid = capacity_grid(spec)
    settings = {i: capacity_settings(grid, d, s) for i, (d, s) in enumerate(sets)}
    keys = {}
    for t in trials:
        if t.kind == "trial":
            i = sets.index((t.domains, t.subtasks))
            keys[(i, t.volume, settings[i].index(t.capacity), t.seed)] = t.trial_id
    return keys


def factor_key(config: dict[str, Any], text: bool = True):
    key = tuple(config.get(f) for f in FACTORS)
    return _key_text(key) if text else key


def _key_text(key: tuple) -> str:
    return "|".join(str(k) for k in key)  # object-store friendly (no tuple keys)


def factor_space(spec: SweepSpec) -> dict[str, list]:
    """The choices of each factor: what Optuna samples (indices for the data sets)."""
    return {"data_set": list(range(len(data_sets(spec)))),
            "volume": spec.grid.volume or [spec.data.per_subtask],
            "capacity": list(range(_n_capacity_settings(spec))), "seed": list(spec.grid.seed)}


def _n_capacity_settings(spec: SweepSpec) -> int:
    from harness.capacity.settings import capacity_settings

    return len(capacity_settings(capacity_grid(spec), *data_sets(spec)[0]))


class FactorSampler:
    """Optuna's TPE sampler over the grid's factor choices, every draw a distinct grid trial (Optuna
    only, no Ray: the Tune searcher below is a thin adapter).

    A draw that repeats a trial already drawn is told to Optuna as failed and drawn again (after a
    few tries the first undrawn trial is enqueued), so `num_samples` counts distinct trials and a
    resume draws only what is missing. Finished records warm-start the sampler (`known`)."""

    def __init__(self, space: dict[str, list], keys: dict[tuple, str], mode: str, seed: int,
                 known: list[tuple[tuple, float | None]] = ()):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna, self._keys, self._seen = optuna, keys, set()
        self._dists = {n: optuna.distributions.CategoricalDistribution(c) for n, c in space.items()}
        self._study = optuna.create_study(direction="minimize" if mode == "min" else "maximize",
                                          sampler=optuna.samplers.TPESampler(seed=seed))
        for key, value in known:
            self._seen.add(key)
            self._study.add_trial(optuna.trial.create_trial(
                params=dict(zip(FACTORS, key)), distributions=self._dists, value=value,
                state=self._state(value)))

    def _state(self, value: float | None):
        states = self._optuna.trial.TrialState
        return states.FAIL if value is None else states.COMPLETE

    def draw(self) -> tuple[Any, tuple] | None:
        """(handle, factor key) of a trial not drawn before; None when the grid is exhausted."""
        undrawn = [k for k in self._keys if k not in self._seen]
        if not undrawn:
            return None
        for _ in range(20):
            handle = self._study.ask(self._dists)
            key = tuple(handle.params[f] for f in FACTORS)
            if key in self._keys and key not in self._seen:
                break
            self._study.tell(handle, state=self._state(None))  # a repeat teaches the sampler nothing
        else:
            self._study.enqueue_trial(dict(zip(FACTORS, undrawn[0])))
            handle, key = self._study.ask(self._dists), undrawn[0]
        self._seen.add(key)
        return handle, key

    def tell(self, handle: Any, value: float | None) -> None:
        if value is None:
            self._study.tell(handle, state=self._state(None))
        else:
            self._study.tell(handle, float(value))

    @classmethod
    def for_sweep(cls, spec: SweepSpec, trials: list[TrialSpec], records: list[TrialRecord]):
        try:
            import optuna  # noqa: F401
        except ImportError as exc:
            from harness.errors import MissingDependencyError

            raise MissingDependencyError(f"search.method optuna needs optuna ({exc}); "
                                         "pip install optuna") from exc
        metric, mode = search_metric(spec)
        keys = factor_keys(spec, trials)
        by_id = {i: k for k, i in keys.items()}
        known = [(by_id[r.run.trial_id], outcome_metrics(r).get(metric))
                 for r in records if r.run.trial_id in by_id and is_done(r)]
        return cls(factor_space(spec), keys, mode, spec.search.sampler_seed, known)


def factor_searcher(sampler: FactorSampler, metric: str, mode: str):
    """A Ray Tune Searcher that suggests the sampler's draws as factor choices."""
    from ray.tune.search import Searcher

    class FactorSearch(Searcher):
        def __init__(self):
            super().__init__(metric=metric, mode=mode)
            self._live: dict[str, Any] = {}

        def suggest(self, trial_id: str):
            drawn = sampler.draw()
            if drawn is None:
                return Searcher.FINISHED
            self._live[trial_id] = drawn[0]
            return dict(zip(FACTORS, drawn[1]))

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            handle = self._live.pop(trial_id, None)
            if handle is not None:
                sampler.tell(handle, None if error else (result or {}).get(metric))

    return FactorSearch()


def _scheduler(spec: SweepSpec):
    if spec.search.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    grace = spec.search.grace_period or spec.train.eval_every
    # stop_last_trials=False: a trial that reaches the last step is never stopped before evaluation
    return ASHAScheduler(time_attr="step", metric="eval_loss", mode="min", max_t=spec.train.steps,
                         grace_period=grace, reduction_factor=spec.search.reduction_factor,
                         stop_last_trials=False)
