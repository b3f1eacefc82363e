"""An Optuna sampler that runs the sweep plan: rule seeds, bracketing, refinement, replicates.

Usable in any Optuna study whose objective suggests ``batch_size``, ``lr`` and ``seed``::

    sampler = LRBatchSampler(SweepPlan(batch_sizes=(32, 128, 512), base_batch=32,
                                       lr_min=1e-4, lr_max=1.0, base_lr=0.01))
    study = optuna.create_study(sampler=sampler)

    def objective(trial):
        batch = trial.suggest_int("batch_size", 32, 512, log=True)
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        seed = trial.suggest_int("seed", 0, 1)
        return train_and_evaluate(batch, lr, seed)

    study.optimize(objective, callbacks=[stop_when_plan_finished])

Every decision is derived from the study's trials (running ones included), so samplers in
several processes or machines sharing one storage cooperate. Other parameters the objective
suggests are sampled by the ``fallback`` sampler.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from lrbatch.plan import Finished, Observation, Proposal, SweepPlan

__all__ = ["PARAMS", "LRBatchSampler", "observations", "stop_when_plan_finished"]

PARAMS = ("batch_size", "lr", "seed")
_ACTIVE = (TrialState.COMPLETE, TrialState.RUNNING)


def observations(trials: Iterable[FrozenTrial], exclude: int | None = None) -> list[Observation]:
    """The plan's view of finished and running trials that carry ``batch_size`` and ``lr``.

    A trial counts as diverged when its ``diverged`` user attribute is set or its value is not
    finite.
    """
    seen = []
    for trial in trials:
        if trial.number == exclude or trial.state not in _ACTIVE:
            continue
        if "batch_size" not in trial.params or "lr" not in trial.params:
            continue
        value = trial.value if trial.state == TrialState.COMPLETE else None
        # lrbatch records divergence; for other trials a non-finite value means it
        diverged = trial.user_attrs.get("diverged", value is not None and not math.isfinite(value))
        seen.append(
            Observation(
                batch_size=int(trial.params["batch_size"]),
                lr=float(trial.params["lr"]),
                seed=int(trial.params.get("seed", 0)),
                value=value,
                diverged=bool(diverged),
                reason=trial.user_attrs.get("reason"),
            )
        )
    return seen


class LRBatchSampler(BaseSampler):
    """Samples ``batch_size``, ``lr`` and ``seed`` from :meth:`SweepPlan.next`.

    When the plan has nothing to propose (every remaining step waits on a running trial, or
    the plan is finished) it explores: a log-uniform learning rate near the best one found so
    far at the batch size with the fewest trials (reason ``explore``). lrbatch's own workers
    ask the plan first and never hit that case.

    Args:
        plan: the sweep's plan.
        seed: seed of the exploration and fallback random streams.
        fallback: sampler for any parameter other than those in :data:`PARAMS`.
    """

    def __init__(
        self, plan: SweepPlan, seed: int | None = None, fallback: BaseSampler | None = None
    ) -> None:
        self.plan = plan
        self._rng = random.Random(seed)
        self._fallback = fallback or RandomSampler(seed)
        self._proposals: dict[int, Proposal] = {}

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._fallback.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if param_name not in PARAMS:
            return self._fallback.sample_independent(study, trial, param_name, param_distribution)
        proposal = self._proposals.get(trial.number)
        if proposal is None:
            proposal = self._propose(study.get_trials(deepcopy=False), trial.number)
            self._proposals[trial.number] = proposal
        value: float = {
            "batch_size": proposal.batch_size,
            "lr": proposal.lr,
            "seed": proposal.seed,
        }[param_name]
        return _fit_into(param_name, value, param_distribution)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._proposals.pop(trial.number, None)

    def proposal(self, trial_number: int) -> Proposal | None:
        """What this sampler proposed for a trial it sampled (and why), while the trial runs."""
        return self._proposals.get(trial_number)

    def _propose(self, trials: list[FrozenTrial], number: int) -> Proposal:
        seen = observations(trials, exclude=number)
        decision = self.plan.next(seen)
        if isinstance(decision, Proposal):
            return decision
        states = self.plan.states(seen)
        state = min(states.values(), key=lambda s: (s.phase == "done", s.trials))
        center = state.best_lr or math.sqrt(self.plan.lr_min * self.plan.lr_max)
        lr = center * self.plan.tolerance ** self._rng.uniform(-2.0, 2.0)
        lr = min(max(lr, self.plan.lr_min), self.plan.lr_max)
        return Proposal(state.batch_size, lr, 0, "explore")


def _fit_into(name: str, value: float, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        if value not in distribution.choices:
            raise ValueError(
                f"the plan proposed {name}={value!r}, which is not among the objective's choices "
                f"{list(distribution.choices)}; make the plan and the objective agree"
            )
        return value
    low, high = distribution.low, distribution.high  # type: ignore[attr-defined]
    if not low * (1 - 1e-9) <= value <= high * (1 + 1e-9):
        raise ValueError(
            f"the plan proposed {name}={value!r}, outside the objective's range [{low}, {high}]; "
            "make the plan's batch sizes and lr bounds lie within the objective's"
        )
    return round(value) if name != "lr" else float(min(max(value, low), high))


def stop_when_plan_finished(study: Study, trial: FrozenTrial) -> None:
    """An ``optimize`` callback: stop the study once its :class:`LRBatchSampler`'s plan is done."""
    sampler = study.sampler
    if not isinstance(sampler, LRBatchSampler):
        return
    if isinstance(sampler.plan.next(observations(study.get_trials(deepcopy=False))), Finished):
        study.stop()
