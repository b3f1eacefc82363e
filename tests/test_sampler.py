"""LRBatchSampler on its own, in a plain Optuna study with a user's objective."""

import math

import optuna
import pytest
from optuna.trial import TrialState

from lrbatch.report.report import build_report
from lrbatch.search.plan import SweepPlan
from lrbatch.search.sampler import LRBatchSampler, next_step, observations, stop_when_plan_finished


def optimum(batch: int) -> float:
    return 0.02 * math.sqrt(batch / 16)  # the square-root rule is the truth here


def make_study(plan: SweepPlan) -> optuna.Study:
    return optuna.create_study(sampler=LRBatchSampler(plan, seed=0))


def test_pins_optima_in_any_optuna_study() -> None:
    plan = SweepPlan(
        batch_sizes=(16, 64, 256),
        base_batch=16,
        lr_min=1e-5,
        lr_max=1.0,
        base_lr=0.2,
        seeds=2,
        tolerance=1.3,
    )  # base lr 10× too high
    study = make_study(plan)

    def objective(trial: optuna.Trial) -> float:
        batch = trial.suggest_categorical("batch_size", [16, 64, 256])
        lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
        seed = trial.suggest_int("seed", 0, 1)
        width = trial.suggest_int("width", 8, 64)  # not the plan's: sampled by the fallback
        assert 8 <= width <= 64
        return math.log(lr / optimum(batch)) ** 2 + 0.001 * seed

    study.optimize(objective, n_trials=300, callbacks=[stop_when_plan_finished])
    assert len(study.trials) < 300, "the plan never finished"
    for batch, state in plan.states(observations(study.trials)).items():
        assert state.phase == "done"
        assert 1 / 1.3 <= state.best_lr / optimum(batch) <= 1.3


def test_reason_is_available_while_the_trial_runs() -> None:
    plan = SweepPlan(batch_sizes=(32,), base_batch=32, lr_min=1e-3, lr_max=1.0, base_lr=0.1)
    sampler = LRBatchSampler(plan)
    study = optuna.create_study(sampler=sampler)
    trial = study.ask()
    trial.suggest_int("batch_size", 32, 32 * 4)
    assert trial.suggest_float("lr", 1e-3, 1.0, log=True) == pytest.approx(0.1)
    assert sampler.proposal(trial.number).reason == "rule:constant+linear+square_root"
    study.tell(trial, 1.0)
    assert sampler.proposal(trial.number) is None


def test_running_trials_in_the_storage_are_not_proposed_again() -> None:
    # Two samplers (two workers) on one storage: the second sees the first's running trial.
    plan = SweepPlan(batch_sizes=(32, 128), base_batch=32, lr_min=1e-3, lr_max=1.0, base_lr=0.1)
    storage = optuna.storages.InMemoryStorage()
    first = optuna.create_study(storage=storage, study_name="s", sampler=LRBatchSampler(plan))
    second = optuna.load_study(storage=storage, study_name="s", sampler=LRBatchSampler(plan))
    taken = []
    for study in (first, second):
        trial = study.ask()
        taken.append(
            (
                trial.suggest_int("batch_size", 32, 128, log=True),
                trial.suggest_float("lr", 1e-3, 1.0, log=True),
            )
        )
    assert taken[0] != taken[1]


def test_a_proposal_outside_the_objectives_choices_is_a_clear_error() -> None:
    plan = SweepPlan(batch_sizes=(32,), base_batch=32, lr_min=1e-3, lr_max=1.0, base_lr=0.1)
    study = make_study(plan)
    trial = study.ask()
    with pytest.raises(
        ValueError, match="batch_size=32, which is not among the objective's choices"
    ):
        trial.suggest_categorical("batch_size", [64, 128])


def test_a_proposal_outside_the_objectives_range_is_a_clear_error() -> None:
    plan = SweepPlan(batch_sizes=(32,), base_batch=32, lr_min=1e-3, lr_max=1.0, base_lr=0.5)
    trial = make_study(plan).ask()
    trial.suggest_int("batch_size", 32, 32)
    with pytest.raises(
        ValueError, match=r"lr=0\.5, outside the objective's range \[0\.001, 0\.1\]"
    ):
        trial.suggest_float("lr", 1e-3, 0.1, log=True)


def test_every_trial_records_the_anchor_and_the_report_anchors_there() -> None:
    # No configured η0: the plan searches B0 = 64 first, then anchors the rules at its best.
    # B0 is not the smallest batch size, and the study has no lrbatch config (a study driven
    # by the sampler outside `lrbatch sweep`): the report must find B0 on the trials.
    plan = SweepPlan(batch_sizes=(16, 64, 256), base_batch=64, lr_min=1e-4, lr_max=1.0, seeds=2)
    study = make_study(plan)

    def objective(trial: optuna.Trial) -> float:
        batch = trial.suggest_int("batch_size", 16, 256, log=True)
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        trial.suggest_int("seed", 0, 1)
        u = math.log(lr / optimum(batch))
        return u**2 + (0.5 * u**3 if u > 0 else 0.0)  # steeper on the high side, as real ones

    study.optimize(objective, n_trials=300, callbacks=[stop_when_plan_finished])
    anchor = plan.anchor_lr(observations(study.trials))
    assert anchor is not None
    for trial in study.trials:
        base_lr = trial.user_attrs["base_lr"]  # recorded by the sampler on every trial
        assert base_lr is None or base_lr == anchor
        assert trial.params["batch_size"] == 64 or base_lr == anchor  # others wait for η0
        assert trial.user_attrs["base_batch"] == 64
        expected = {} if base_lr is None else plan.predictions(trial.params["batch_size"], anchor)
        assert trial.user_attrs["predictions"] == expected
    report = build_report(study)
    assert (report.base_batch, report.base_lr) == (64, anchor)
    linear = next(r for r in report.regrets if r.rule == "linear" and r.batch_size == 256)
    assert linear.predicted_lr == pytest.approx(anchor * 4)  # anchored at (64, η0)


def test_a_killed_trial_known_to_diverge_by_now_is_not_retried() -> None:
    plan = SweepPlan(batch_sizes=(32, 128), base_batch=32, lr_min=1e-3, lr_max=1.0, base_lr=0.1)
    distributions = {
        "batch_size": optuna.distributions.IntDistribution(32, 128, log=True),
        "lr": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True),
        "seed": optuna.distributions.IntDistribution(0, 1),
    }

    def trial(batch: int, lr: float, **kwargs) -> optuna.trial.FrozenTrial:
        params = {"batch_size": batch, "lr": lr, "seed": 0}
        return optuna.trial.create_trial(params=params, distributions=distributions, **kwargs)

    study = optuna.create_study()
    study.add_trial(trial(32, 0.4, state=TrialState.FAIL, user_attrs={"reason": "bracket"}))
    assert next_step(plan, study.trials).reason == "retry of #0: bracket"
    study.add_trial(trial(128, 0.3, value=math.inf, user_attrs={"diverged": True}))
    step = next_step(plan, study.trials)
    assert not (step.batch_size == 32 and step.lr == pytest.approx(0.4)), step
