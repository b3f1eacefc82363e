"""lrbatch sweep end to end: real training on small data, a real SQLite study, resume, bad input."""

import math
from pathlib import Path

import optuna
import pytest
import torch
from conftest import ROOT, TINY
from optuna.trial import TrialState

from lrbatch import __version__
from lrbatch.config import ConfigError, load_config
from lrbatch.science.noise import window_steps
from lrbatch.search.study_io import PACK_CHOICE_ATTR, record_pack_choice, trial_noise
from lrbatch.training.loop import train
from lrbatch.workers.sweep import run_sweep

SMOKE = ROOT / "sweeps" / "smoke.yaml"
TRIAL_ATTRS = {
    "effective_batch",
    "micro_batch",
    "accumulation_steps",
    "seed",
    "predictions",
    "reason",
    "diverged",
    "steps",
    "samples",
    "wall_time_s",
    "device",
    "lrbatch_version",
    "metrics",
    "noise_scale",
    "grad_norms",
    "pack",
}


def points(study: optuna.Study) -> set[tuple[int, float, int]]:
    return {
        (t.params["batch_size"], round(t.params["lr"], 9), t.params["seed"])
        for t in study.get_trials(states=(TrialState.COMPLETE,))
    }


def assert_every_trial_complete(study: optuna.Study) -> None:
    """No trial failed, is running or was skipped (one per core by default: they take turns to
    plan, so two never choose one point)."""
    states = {t.number: t.state for t in study.trials if t.state != TrialState.COMPLETE}
    assert not states, states


def test_smoke_sweep_records_a_complete_study(workdir: Path) -> None:
    outcome = run_sweep(load_config(SMOKE))
    assert outcome.why == "complete" and outcome.trials_run > 5

    study = optuna.load_study(study_name="smoke", storage="sqlite:///runs/smoke.db")
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == outcome.trials_run
    assert_every_trial_complete(study)
    for trial in trials:
        attrs = trial.user_attrs
        assert set(attrs) >= TRIAL_ATTRS, TRIAL_ATTRS - set(attrs)
        assert attrs["effective_batch"] == trial.params["batch_size"]
        assert attrs["micro_batch"] * attrs["accumulation_steps"] == attrs["effective_batch"]
        assert attrs["seed"] == trial.params["seed"]
        assert attrs["lrbatch_version"] == __version__ and attrs["device"] == "cpu"
        assert set(attrs["predictions"]) == {"constant", "linear", "square_root"}
        assert attrs["reason"].split(":")[0] in {"rule", "law", "bracket", "refine", "replicate"}
        # hardware.pack=auto (the default) timed packs at this batch size and said what it chose
        assert attrs["pack"]["chosen"].startswith(("a pack of", "no pack size"))
        assert trial.number in attrs["pack"]["trials"]
        if not attrs["diverged"]:
            assert attrs["samples"] == attrs["steps"] * attrs["effective_batch"]
            assert trial.value == pytest.approx(attrs["metrics"]["val_loss"])
            noise = trial_noise(trial)  # B_simple at 4 points, each from up to 4 steps' gradients
            assert [r.point for r in noise.records] == ["start", "10%", "50%", "end"]
            window = window_steps(attrs["steps"])  # (4 at batch 32, 1 at 128: 150 and 37 steps)
            assert all(r.estimate.steps == window for r in noise.records)
            assert all(r.estimate.trace_sigma > 0 for r in noise.records)
            assert noise.grad_norms[0][0] == 1 and noise.grad_norms[-1][0] == attrs["steps"]
    # The rules' predictions were evaluated exactly, at every batch size.
    for batch in (32, 128):
        reasons = {t.user_attrs["reason"] for t in trials if t.params["batch_size"] == batch}
        assert any(r.startswith("rule:") for r in reasons)
    assert any(t.user_attrs["reason"] == "replicate" for t in trials)
    assert study.user_attrs["lrbatch.training"]["model"]["hidden"] == [128, 128]


def test_a_packed_sweep_trains_each_pack_in_one_pass_as_its_trials_alone(workdir: Path) -> None:
    cfg = load_config(SMOKE, ["hardware.pack=3"])
    outcome = run_sweep(cfg)
    assert outcome.why == "complete"
    study = optuna.load_study(study_name="smoke", storage="sqlite:///runs/smoke.db")
    trials = {t.number: t for t in study.get_trials(states=(TrialState.COMPLETE,))}
    packs = {tuple(t.user_attrs["pack"]["trials"]) for t in trials.values()}
    assert sum(map(len, packs)) == len(trials)  # each trial in one pack
    assert max(map(len, packs)) == 3 and len(packs) < 0.6 * len(trials)
    for pack in packs:
        members = [trials[n] for n in pack]
        assert len({(t.params["batch_size"], t.params["seed"]) for t in members}) == 1
        assert {t.user_attrs["pack"]["trained_together"] for t in members} == {len(pack)}
        assert len({t.params["lr"] for t in members}) == len(pack)
    # a packed member's result is the result of the same trial trained alone
    member = next(trials[n] for pack in packs if len(pack) == 3 for n in pack)
    alone = train(cfg, member.params["batch_size"], member.params["lr"], member.params["seed"])
    assert alone.metrics["val_loss"] == pytest.approx(member.value, rel=1e-5)
    assert len(points(study)) == len(trials)


def test_resume_finishes_the_same_plan_without_repeating(workdir: Path) -> None:
    # (one pack size throughout: hardware.pack=auto times packs, and a timing may choose
    # another size in another run, hence other points; one worker: with two, which finishes
    # first decides the next points)
    one_at_a_time = ["hardware.pack=1", "hardware.workers=1"]
    first = run_sweep(load_config(SMOKE, one_at_a_time), trial_limit=4)
    assert first.why == "paused" and first.trials_run == 4
    second = run_sweep(load_config(SMOKE, one_at_a_time))
    assert second.why == "complete"
    third = run_sweep(load_config(SMOKE, one_at_a_time))
    assert third.why == "complete" and third.trials_run == 0

    uninterrupted = run_sweep(load_config(SMOKE, ["study.name=straight", *one_at_a_time]))
    resumed = optuna.load_study(study_name="smoke", storage="sqlite:///runs/smoke.db")
    straight = optuna.load_study(study_name="straight", storage="sqlite:///runs/straight.db")
    assert len(resumed.trials) == first.trials_run + second.trials_run == uninterrupted.trials_run
    assert points(resumed) == points(straight)


def test_diverged_runs_are_kept_and_the_sweep_goes_on(workdir: Path) -> None:
    cfg = load_config(
        SMOKE,
        [
            "sweep.base_lr=null",
            "sweep.lr_max=1000",
            "sweep.base_grid_per_decade=1",
            "sweep.batch_sizes=[32]",
            "sweep.seeds=1",
        ],
    )
    outcome = run_sweep(cfg)
    assert outcome.why == "complete"
    study = optuna.load_study(study_name="smoke", storage="sqlite:///runs/smoke.db")
    trained = study.get_trials(states=(TrialState.COMPLETE,))  # (not a second worker's skip)
    diverged = [t for t in trained if t.user_attrs["diverged"]]
    assert diverged
    assert all(math.isinf(t.value) for t in diverged)
    assert all(t.user_attrs["steps"] < 150 for t in diverged)  # stopped early
    best = min(t.params["lr"] for t in diverged)
    assert all(not t.user_attrs["diverged"] for t in trained if t.params["lr"] < best)


def test_auto_pack_choices_are_recorded_once_and_read_back_not_timed_again(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_sweep(load_config(SMOKE, ["hardware.workers=1", "sweep.max_trials=1"]))
    study = optuna.load_study(study_name="smoke", storage="sqlite:///runs/smoke.db")
    (first,) = study.trials
    (key,) = (k for k in study.user_attrs if k.startswith(PACK_CHOICE_ATTR))
    batch = first.params["batch_size"]
    assert key.endswith(f", 1 thread/B={batch}") and key.startswith(f"{PACK_CHOICE_ATTR}/cpu ")
    assert study.user_attrs[key]["why"] == first.user_attrs["pack"]["chosen"]
    hardware = key.removeprefix(f"{PACK_CHOICE_ATTR}/").removesuffix(f"/B={batch}")
    # the first choice recorded stands (a second worker that timed meanwhile takes it)
    recorded = study.user_attrs[key]
    assert record_pack_choice(study, hardware, batch, 7, "later") == (
        recorded["size"],
        recorded["why"],
    )
    # a resumed sweep packs as recorded, at every batch size, and times nothing
    for b in (32, 128):
        study.set_user_attr(f"{PACK_CHOICE_ATTR}/{hardware}/B={b}", {"size": 2, "why": "given"})

    def no_timing(*args: object, **kwargs: object) -> None:
        raise AssertionError("packs were timed again")

    monkeypatch.setattr("lrbatch.workers.worker.choose_pack", no_timing)
    outcome = run_sweep(load_config(SMOKE, ["hardware.workers=1"]))
    assert outcome.why == "complete"
    later = study.get_trials(states=(TrialState.COMPLETE,))[1:]
    assert {t.user_attrs["pack"]["chosen"] for t in later} == {"given"}
    for b in (32, 128):
        together = {
            t.user_attrs["pack"]["trained_together"] for t in later if t.params["batch_size"] == b
        }
        assert together <= {1, 2} and 2 in together


def test_sweep_budget_is_said(workdir: Path) -> None:
    outcome = run_sweep(load_config(SMOKE, ["sweep.max_trials=3"]))
    assert outcome.why == "budget" and outcome.trials_run == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["sweep.batch_sizes=[32,4096]"],
            "[4096] exceed the training set (1600 examples of mnist1d)",
        ),
        (["model.hidden=[8]", "model.activation=swish"], "model (lrbatch.models.MLP) or optimizer"),
        (["study.metric=val_f1"], "study.metric='val_f1' is not accepted; accepted: val_loss"),
        (["dataset.noise=0.5"], "dataset.noise=0.5 is not accepted; lrbatch.data.mnist1d accepts"),
    ],
)
def test_bad_input_fails_before_anything_is_created(
    workdir: Path, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        run_sweep(load_config(SMOKE, overrides))
    assert message in str(error.value)
    assert not (workdir / "runs").exists()


def test_unwritable_storage_is_refused_before_training(workdir: Path) -> None:
    (workdir / "a_file").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"cannot create .*a_file"):
        run_sweep(load_config(SMOKE, [f"study.storage=sqlite:///{workdir}/a_file/study.db"]))
    with pytest.raises(ConfigError, match=r"in-memory SQLite"):
        run_sweep(load_config(SMOKE, ["study.storage=sqlite://"]))
    with pytest.raises(ConfigError, match="is not a SQLAlchemy URL"):
        run_sweep(load_config(SMOKE, ["study.storage=not a url"]))


def test_unreachable_storage_never_shows_the_password(workdir: Path) -> None:
    url = "postgresql+psycopg2://bob:hunter2@127.0.0.1:1/lrbatch"
    with pytest.raises(ConfigError) as error:
        run_sweep(load_config(SMOKE, [f"study.storage='{url}'"]))
    assert "cannot be opened" in str(error.value) and "bob:***@127.0.0.1" in str(error.value)
    assert "hunter2" not in str(error.value)


def test_resuming_with_other_training_settings_is_refused(workdir: Path) -> None:
    run_sweep(load_config(SMOKE), trial_limit=1)
    with pytest.raises(
        ConfigError, match=r"other training settings \(model.hidden: \[128, 128\] in"
    ):
        run_sweep(load_config(SMOKE, ["model.hidden=[64]"]))
    study = optuna.load_study(study_name="smoke", storage="sqlite:///runs/smoke.db")
    assert len(study.trials) == 1  # the refused run added nothing


@pytest.mark.parametrize(
    "sweep_file", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_ready_made_sweep_runs_two_tiny_trials(workdir: Path, sweep_file: Path) -> None:
    from test_data import _fake_images

    _fake_images(workdir / "data", "cifar10")
    tiny_data = {
        "lrbatch.data.mnist1d": ["dataset.num_samples=400"],
        "lrbatch.data.teacher": ["dataset.num_samples=400"],
        "lrbatch.data.teacher_regression": ["dataset.num_samples=400"],
        "lrbatch.data.cifar10": [f"dataset.data_dir={workdir / 'data'}", "dataset.download=false"],
    }
    cfg = load_config(sweep_file)
    overrides = [
        *TINY,
        *tiny_data.get(cfg.dataset._target_, []),
        "sweep.batch_sizes=[4,8]",
        "sweep.base_batch=4",
        "sweep.base_grid_per_decade=1",
    ]
    cfg = load_config(sweep_file, overrides)
    outcome = run_sweep(cfg, trial_limit=2)
    assert outcome.trials_run == 2
    study = optuna.load_study(
        study_name=cfg.study.name, storage=f"sqlite:///runs/{cfg.study.name}.db"
    )
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2
    assert_every_trial_complete(study)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_requested_where_there_is_none_is_refused(workdir: Path) -> None:
    message = r"hardware \(accelerator='gpu', precision='bf16-mixed'\) cannot be used here"
    with pytest.raises(ConfigError, match=message):
        run_sweep(load_config(SMOKE, ["hardware=gpu"]))
    assert not (workdir / "runs").exists()


def test_a_metric_the_trainer_does_not_measure_is_refused_for_any_model(workdir: Path) -> None:
    overrides = [
        "dataset._target_=plugins.blobs",
        "~dataset.train_split",
        "~dataset.num_samples",
        "~dataset.seed",
        "model._target_=plugins.LabelSmoothedNet",
        "~model.hidden",
        "~model.activation",
        "study.metric=val_los",
    ]
    with pytest.raises(
        ConfigError, match=r"study\.metric='val_los' is not accepted; accepted: val_loss"
    ):
        run_sweep(load_config(SMOKE, overrides))
    assert not (workdir / "runs").exists()


def test_float16_on_the_cpu_is_refused(workdir: Path) -> None:
    with pytest.raises(ConfigError, match=r"precision='16-mixed' needs a GPU"):
        run_sweep(load_config(SMOKE, ["hardware.precision=16-mixed"]))


def test_target_budget_sweep_picks_the_fewest_steps(workdir: Path) -> None:
    # val_acc is maximised, but the objective (steps to reach it) is minimised.
    cfg = load_config(
        ROOT / "sweeps" / "teacher_target.yaml",
        [
            "dataset.num_samples=1000",
            "sweep.batch_sizes=[16,64]",
            "sweep.seeds=1",
            "budget.max_epochs=4",
            "budget.eval_every_epochs=0.1",
            "budget.target=0.45",
            "sweep.tolerance=2",
        ],
    )
    outcome = run_sweep(cfg)
    study = optuna.load_study(
        study_name="teacher_target", storage="sqlite:///runs/teacher_target.db"
    )
    assert study.direction == optuna.study.StudyDirection.MINIMIZE and outcome.plan.minimize
    for batch, state in outcome.plan.states(outcome.observations).items():
        steps = [o.value for o in outcome.observations if o.batch_size == batch]
        assert math.isfinite(state.best_value) and state.best_value == min(steps), batch
    capped = [
        t
        for t in study.get_trials(states=(TrialState.COMPLETE,))
        if t.user_attrs["reached_target"] is False
        and t.user_attrs["steps"] == 4 * 800 // t.params["batch_size"]
    ]
    assert capped and all(not t.user_attrs["diverged"] for t in capped)  # never reached ≠ diverged
