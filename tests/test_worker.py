"""The worker stage's decisions between asking the plan and training, on a real Optuna study:
several workers that read the study at nearly the same moment, and killed packs."""

import math
from types import SimpleNamespace

import optuna
import test_plan as synthetic
from optuna.trial import FrozenTrial, Trial, TrialState

from lrbatch.search.plan import Proposal, SweepPlan
from lrbatch.search.sampler import LRBatchSampler, next_pack
from lrbatch.search.study_io import observations
from lrbatch.workers.worker import _keep_untaken, _suggest


def value(p: Proposal) -> float:
    return math.log(p.lr / synthetic.saturating_optimum(p.batch_size)) ** 2 + 1


def worker(plan: SweepPlan, storage: optuna.storages.BaseStorage) -> SimpleNamespace:
    """What _keep_untaken and _suggest need of a worker: its plan, sampler and study."""
    sampler = LRBatchSampler(plan)
    study = optuna.load_study(study_name="s", storage=storage, sampler=sampler)
    return SimpleNamespace(plan=plan, sampler=sampler, study=study)


def ask(w: SimpleNamespace, pack: tuple[Proposal, ...]) -> list[Trial]:
    """One trial per point, as the worker asks them (the point assigned to its sampler)."""
    w.sampler.assign(pack, w.plan.anchor_lr(observations(w.study.get_trials())))
    members = []
    for _ in pack:
        members.append(w.study.ask())
        _suggest(members[-1], w)
    return members


def plan(**overrides: object) -> SweepPlan:
    settings: dict = dict(
        batch_sizes=synthetic.BATCHES, base_batch=32, lr_min=1e-4, lr_max=100.0, seeds=2
    )
    settings.update(overrides)
    return SweepPlan(**settings)


def test_two_workers_reading_at_once_stay_within_the_trial_budget() -> None:
    """A reads the study while the last trial runs, B right after it finished: each decides
    one more trial is allowed; once both exist, the later one is pruned, not trained."""
    budget = 15
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage)
    a, b = worker(plan(max_trials=budget), storage), worker(plan(max_trials=budget), storage)
    for i in range(budget - 1):
        decision = next_pack(a.plan, a.study.get_trials())
        assert isinstance(decision, tuple)
        (trial,) = ask(a, decision[:1])
        if i < budget - 2:
            a.study.tell(trial, value(decision[0]))
    seen_by_a = a.study.get_trials()
    a.study.tell(trial, value(decision[0]))
    seen_by_b = b.study.get_trials()
    pack_a, pack_b = next_pack(a.plan, seen_by_a), next_pack(b.plan, seen_by_b)
    assert isinstance(pack_a, tuple) and isinstance(pack_b, tuple)
    kept = _keep_untaken(a, ask(a, pack_a)) + _keep_untaken(b, ask(b, pack_b))
    assert len(kept) == 1
    trials = a.study.get_trials()
    active = [t for t in trials if t.state in (TrialState.RUNNING, TrialState.COMPLETE)]
    assert len(active) == budget
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert [t.user_attrs["reason"] for t in pruned] == ["skipped: sweep.max_trials reached"]


def test_a_killed_pack_is_retried_as_a_pack() -> None:
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage)
    packed = plan(pack=tuple((b, 4) for b in synthetic.BATCHES), base_lr=0.1)
    w = worker(packed, storage)
    first = next_pack(packed, w.study.get_trials())
    assert isinstance(first, tuple) and len(first) == 4
    for trial in ask(w, first):  # killed while training: failed without an error of its own
        w.study.tell(trial, state=TrialState.FAIL)
    retry = next_pack(packed, w.study.get_trials())
    assert isinstance(retry, tuple)
    assert [(p.batch_size, p.lr, p.seed) for p in retry] == [
        (p.batch_size, p.lr, p.seed) for p in first
    ]
    assert all(p.reason.startswith("retry of #") for p in retry)
    failed: list[FrozenTrial] = w.study.get_trials()
    assert {t.state for t in failed} == {TrialState.FAIL}
