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
several processes or machines sharing one storage cooperate. Two samplers never propose the
same point: trial numbers order them (the storage numbers trials under a lock), each sampler
waits until every lower-numbered running trial has recorded its point, and records its own
before returning. A trial that failed without an error of its own (its worker was killed,
interrupted, or went silent past the heartbeat grace period) is retried first, with the same
parameters, unless it has since become known to diverge (:meth:`SweepPlan.diverges`). Other
parameters the objective suggests are sampled by the ``fallback`` sampler.

Each trial the sampler proposes carries user attributes ``base_lr``, the η0 the plan anchored
its rules at when it proposed the trial (None while the base point is still searched), and
``predictions``, each rule's learning rate at the trial's batch size from there: the report
anchors the rules where the sweep did, whatever ran the study.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Sequence
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from lrbatch.search.decisions import Finished, Observation, Proposal, Wait, same_point
from lrbatch.search.plan import SweepPlan
from lrbatch.search.study_io import PROPOSAL_ATTR, observations, placed, planned, point, trial_run

__all__ = [
    "PARAMS",
    "LRBatchSampler",
    "next_pack",
    "next_step",
    "observations",
    "point",
    "stop_when_plan_finished",
]

PARAMS = ("batch_size", "lr", "seed")
_ORDER_POLL_S = 0.02  # how often a sampler looks whether lower-numbered trials have a point
_ORDER_TIMEOUT_S = 10.0  # ...and how long it waits for one that never records any


def _retry(
    plan: SweepPlan, trials: Sequence[FrozenTrial], seen: list[Observation], exclude: int | None
) -> tuple[Proposal, ...]:
    """The points of trials that failed without an error of their own (killed, interrupted,
    stale), that no running or finished trial covers since, and that are not known to diverge
    by now: the first such point, with the others at its batch size and seed (a pack that was
    killed is retried as a pack), up to the pack size there."""
    taken = [where for number, where in placed(trials) if number != exclude]
    retries: list[Proposal] = []
    for trial in trials:
        if trial.state != TrialState.FAIL or trial_run(trial).error is not None:
            continue
        failed = point(trial)
        if failed is None or failed.reason.startswith("explore"):
            continue
        if retries and (failed.batch_size, failed.seed) != (
            retries[0].batch_size,
            retries[0].seed,
        ):
            continue
        if plan.diverges(seen, failed.batch_size, failed.lr):
            continue
        if not any(same_point(failed, p) for p in [*taken, *retries]):
            reason = f"retry of #{trial.number}: {planned(failed.reason)}"
            retries.append(Proposal(failed.batch_size, failed.lr, failed.seed, reason))
            if len(retries) >= plan.pack_size(failed.batch_size):
                break
    return tuple(retries)


def next_pack(
    plan: SweepPlan, trials: Sequence[FrozenTrial], exclude: int | None = None
) -> tuple[Proposal, ...] | Wait | Finished:
    """What the study needs next: a retry of killed trials' points (as a pack where they were
    one), else :meth:`SweepPlan.next_pack`.

    Args:
        plan: the sweep's plan.
        trials: every trial of the study.
        exclude: the number of the trial asking (it is not one of the trials to consider).
    """
    seen = observations(trials, exclude)
    decision = plan.next_pack(seen)
    if isinstance(decision, Finished):
        return decision
    retries = _retry(plan, trials, seen, exclude)
    left = plan.max_trials - len(seen)
    return retries[: max(1, left)] if retries else decision


def next_step(
    plan: SweepPlan, trials: Sequence[FrozenTrial], exclude: int | None = None
) -> Proposal | Wait | Finished:
    """The first of :func:`next_pack`: what the study needs next, one trial."""
    decision = next_pack(plan, trials, exclude)
    return decision[0] if isinstance(decision, tuple) else decision


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
        self._assigned: list[tuple[Proposal, float | None]] = []

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
            if self._assigned:
                proposal, base_lr = self._assigned.pop(0)
            else:
                trials = self.after_earlier_trials(study, trial.number)
                proposal = self._propose(trials, trial.number)
                base_lr = self.plan.anchor_lr(observations(trials, exclude=trial.number))
            self._proposals[trial.number] = proposal
            # Record the whole point at once: later trials' samplers wait for it.
            storage = study._storage
            storage.set_trial_system_attr(
                trial._trial_id, PROPOSAL_ATTR, dataclasses.asdict(proposal)
            )
            predictions = (
                {} if base_lr is None else self.plan.predictions(proposal.batch_size, base_lr)
            )
            storage.set_trial_user_attr(trial._trial_id, "base_batch", self.plan.base_batch)
            storage.set_trial_user_attr(trial._trial_id, "base_lr", base_lr)
            storage.set_trial_user_attr(trial._trial_id, "predictions", predictions)
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

    def assign(self, proposals: Sequence[Proposal], base_lr: float | None) -> None:
        """Give the next trials these points, in order, instead of asking the plan (a worker
        that asked the plan for a pack itself); ``base_lr`` is the η0 it was anchored at."""
        self._assigned = [(p, base_lr) for p in proposals]

    def proposal(self, trial_number: int) -> Proposal | None:
        """What this sampler proposed for a trial it sampled (and why), while the trial runs."""
        return self._proposals.get(trial_number)

    @staticmethod
    def after_earlier_trials(study: Study, number: int) -> list[FrozenTrial]:
        """The study's trials, once every running trial numbered below ``number`` has a point
        (or :data:`_ORDER_TIMEOUT_S` has passed: a trial that never records one is ignored)."""
        deadline = time.monotonic() + _ORDER_TIMEOUT_S
        while True:
            trials = study.get_trials(deepcopy=False)
            pending = any(
                t.number < number and t.state == TrialState.RUNNING and point(t) is None
                for t in trials
            )
            if not pending or time.monotonic() > deadline:
                return trials
            time.sleep(_ORDER_POLL_S)

    def _propose(self, trials: list[FrozenTrial], number: int) -> Proposal:
        decision = next_step(self.plan, trials, exclude=number)
        if isinstance(decision, Proposal):
            return decision
        seen = observations(trials, exclude=number)
        states = self.plan.states(seen)
        state = min(states.values(), key=lambda s: (s.phase == "done", s.trials))
        center = state.best_lr or math.sqrt(self.plan.lr_min * self.plan.lr_max)
        lr = center * self.plan.tolerance ** self._rng.uniform(-2.0, 2.0)
        lr = min(lr, state.edge / self.plan.tolerance)  # (below the stability edge)
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
    if isinstance(next_step(sampler.plan, study.get_trials(deepcopy=False)), Finished):
        study.stop()
