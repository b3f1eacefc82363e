"""Composing conf/: every group option instantiates, and bad settings fail with one clear error."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from lrbatch.config import ConfigError, conf_dir, load_config

GROUPS = {
    group: sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
    for group in ("dataset", "model", "optimizer", "schedule", "budget", "hardware")
}


def test_default_config_composes() -> None:
    cfg = load_config()
    assert cfg.dataset._target_ == "lrbatch.data.mnist1d"
    assert cfg.model._target_ == "lrbatch.models.MLP"
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert cfg.study.metric == "val_loss" and cfg.budget.kind == "samples"


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_group_option_composes(group: str) -> None:
    assert GROUPS[group], f"conf/{group} is empty"
    for option in GROUPS[group]:
        overrides = [f"{group}={option}"]
        if option == "target":
            overrides.append("budget.target=0.5")
        cfg = load_config(overrides=overrides)
        assert cfg[group] is not None


@pytest.mark.parametrize("option", GROUPS["optimizer"])
def test_every_optimizer_instantiates(option: str) -> None:
    import torch

    cfg = load_config(overrides=[f"optimizer={option}"])
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = instantiate(cfg.optimizer)(params, lr=0.01)
    assert optimizer.param_groups[0]["lr"] == 0.01


@pytest.mark.parametrize("option", GROUPS["model"])
def test_every_model_instantiates(option: str) -> None:
    import torch

    cfg = load_config(overrides=[f"model={option}"])
    in_shape = (3, 32, 32) if option == "resnet" else (40,)
    model = instantiate(cfg.model, in_shape=in_shape, num_outputs=10)
    assert model(torch.zeros(2, *in_shape)).shape == (2, 10)


def test_sweep_file_and_overrides_compose(tmp_path: Path) -> None:
    sweep = tmp_path / "mine.yaml"
    sweep.write_text("defaults:\n  - override /optimizer: adam\nsweep:\n  batch_sizes: [8, 16]\n")
    cfg = load_config(sweep, ["sweep.seeds=3"])
    assert cfg.optimizer._target_ == "torch.optim.Adam"
    assert list(cfg.sweep.batch_sizes) == [8, 16] and cfg.sweep.seeds == 3
    assert load_config(sweep, ["optimizer=lion"]).optimizer._target_ == "lrbatch.optim.Lion"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["sweep.batch_sise=[1]"],
            "unknown setting 'batch_sise' in SweepConfig; accepted: batch_sizes",
        ),
        (["optimizer=adamm"], "unknown optimizer 'adamm'; accepted: adam, adamw"),
        (
            ["sweep.batch_sizes=[32,0]"],
            "sweep.batch_sizes=[32, 0] is not accepted; batch sizes must be > 0",
        ),
        (["sweep.batch_sizes=[]"], "sweep.batch_sizes=[] is not accepted"),
        (["sweep.lr_min=-1"], "sweep.lr_min=-1.0 is not accepted; a positive number is needed"),
        (
            ["sweep.lr_min=1", "sweep.lr_max=0.1"],
            "sweep.lr_min=1.0 is not accepted; it must be below sweep.lr_max=0.1",
        ),
        (["sweep.base_batch=48"], "sweep.base_batch=48 is not accepted; it must be one of"),
        (["sweep.base_lr=100"], "sweep.base_lr=100.0 is not accepted; it must lie within"),
        (
            ["sweep.rules=[cubic]"],
            "sweep.rules='cubic' is not accepted; accepted: constant, linear",
        ),
        (
            ["sweep.rules=[linear,surge]"],
            "sweep.rules='surge' is not accepted; saturating and surge need",
        ),
        (["sweep.rules=[]"], "sweep.rules=[] is not accepted; give one or more of constant"),
        (
            ["sweep.rules=[linear,measured]", "sweep.b_noise=100"],
            "sweep.rules='measured' is not accepted; measured needs sweep.b_noise and "
            "sweep.eps_max",
        ),
        (["sweep.eps_max=-1"], "sweep.eps_max=-1.0 is not accepted; a positive number is needed"),
        (
            ["sweep.bracket_factor=1.005"],
            "sweep.bracket_factor=1.005 is not accepted; it must be ≥ 1.1",
        ),
        (["sweep.tolerance=1"], "sweep.tolerance=1.0 is not accepted; it must be ≥ 1.05"),
        (
            ["sweep.max_seeds=-1"],
            "sweep.max_seeds=-1 is not accepted; the most seeds a batch size gets where its "
            "optimum is loose: more than sweep.seeds (now 3) to add seeds there, or 0 (or ≤ "
            "sweep.seeds) for none",
        ),
        (["schedule.name=cosine"], "schedule.name='cosine' is not accepted; accepted: constant,"),
        (["budget=target", "budget.target=null"], "budget.target=None is not accepted"),
        (["hardware.precision=fp8"], "hardware.precision='fp8' is not accepted; accepted: 32,"),
        (
            ["hardware.workers=many"],
            "hardware.workers='many' is not accepted; accepted: auto (one per CPU core, at most "
            "8), or a whole number of processes >= 1",
        ),
        (["hardware.workers=0"], "hardware.workers=0 is not accepted; accepted: auto"),
        (["hardware.workers=1.5"], "hardware.workers=1.5 is not accepted; accepted: auto"),
        (
            ["study.direction=up"],
            "study.direction='up' is not accepted; accepted: minimize, maximize",
        ),
        (
            ["model.hiden=[8]"],
            "model.hiden=[8] is not accepted; lrbatch.models.MLP accepts: hidden, activation",
        ),
        (
            ["optimizer._target_=torch.optim.Nope"],
            "optimizer._target_='torch.optim.Nope' cannot be imported",
        ),
    ],
)
def test_bad_settings_fail_with_a_clear_message(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(overrides=overrides)
    assert message in str(error.value)


def test_missing_sweep_file() -> None:
    with pytest.raises(ConfigError, match=r"sweep file 'nope\.yaml' does not exist"):
        load_config("nope.yaml")


def test_broken_yaml_is_a_clear_error(tmp_path: Path) -> None:
    sweep = tmp_path / "broken.yaml"
    sweep.write_text("sweep:\n  batch_sizes: [8, 16\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml' is not valid YAML") as error:
        load_config(sweep)
    assert "line 2" in str(error.value)


# -- a worker joining a study: the study's config, this machine's hardware ----------------------


def _recorded(*overrides: str) -> dict:
    from omegaconf import OmegaConf

    recorded = OmegaConf.to_container(load_config(None, list(overrides)), resolve=True)
    assert isinstance(recorded, dict)
    return recorded


def test_joining_worker_takes_the_study_config_and_this_machines_hardware() -> None:
    from lrbatch.config import config_of_study

    recorded = _recorded("optimizer=adam", "hardware.max_micro_batch=64")
    cfg = config_of_study(recorded, ["hardware.workers_per_gpu=2", "hardware=gpu"])

    assert cfg.optimizer == recorded["optimizer"]
    assert cfg.hardware.accelerator == "gpu" and cfg.hardware.workers_per_gpu == 2
    # what a trial measures stays the study's: its precision and micro-batch, not gpu.yaml's
    assert cfg.hardware.precision == "32" and cfg.hardware.max_micro_batch == 64


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("hardware=tpu", r"hardware='?tpu'? is not accepted.*one of cpu, gpu"),
        ("hardware.wrokers=2", r"hardware\.wrokers='?2'? is not accepted.*setting of the study"),
        ("hardware.workers=0", r"hardware\.workers=0"),
        ("threads", r"override='threads' is not accepted.*key=value"),
        ("sweep.seeds=5", r"sweep.seeds='?5'? is not accepted; a joining worker trains with the"),
        ("optimizer.momentum=0.9", r"optimizer.momentum='?0.9'? is not accepted; a joining"),
    ],
)
def test_joining_worker_bad_override(override: str, message: str) -> None:
    from lrbatch.config import config_of_study

    with pytest.raises(ConfigError, match=message):
        config_of_study(_recorded(), [override])


def test_a_replaced_target_starts_from_its_own_arguments(tmp_path: Path) -> None:
    """`model._target_=...` drops the option file's settings (mlp's hidden, activation), keeps
    those given with it; a sweep file's own settings for the section count as given."""
    cfg = load_config(overrides=["model._target_=mypkg.models.Net", "+model.depth=4"])
    assert dict(cfg.model) == {"_target_": "mypkg.models.Net", "depth": 4}
    cfg = load_config(overrides=["dataset._target_=mypkg.data.load", "dataset.seed=3"])
    assert dict(cfg.dataset) == {"_target_": "mypkg.data.load", "seed": 3}
    sweep = tmp_path / "mine.yaml"
    sweep.write_text("model:\n  _target_: mypkg.models.Net\n  width: 8\n")
    assert dict(load_config(sweep).model) == {"_target_": "mypkg.models.Net", "width": 8}
    # the option's own target keeps the option's settings; a setting the target lacks is refused
    assert load_config(overrides=["model._target_=lrbatch.models.MLP"]).model.hidden == [256, 256]
    with pytest.raises(ConfigError, match=r"model.hidden=\[8\] is not accepted; mypkg.models.Net"):
        load_config(overrides=["model._target_=mypkg.models.Net", "model.hidden=[8]"])


def test_the_readmes_running_sweeps_examples_run_one_after_another() -> None:
    """docs/sweeps.md, "Running sweeps": two examples sharing a study train the same way (else the
    second would be refused, its training settings differing from the study's)."""
    import shlex

    from conftest import ROOT

    from lrbatch.workers.prepare import storage_url, training_settings

    readme = (ROOT / "docs" / "sweeps.md").read_text()
    block = readme.split("## Running sweeps", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    studies: dict[str, tuple[str, dict]] = {}
    for line in block.splitlines():
        if not line.startswith("lrbatch sweep"):
            continue
        words = shlex.split(line.split("#")[0])[2:]
        options = {i for i, word in enumerate(words) if word.startswith("--")}
        items = [w for i, w in enumerate(words) if not {i, i - 1} & options]  # (and values)
        sweep_file = str(ROOT / items.pop(0)) if items and items[0].endswith(".yaml") else None
        cfg = load_config(sweep_file, items)
        study = f"{cfg.study.name} in {storage_url(cfg)}"
        first, settings = studies.setdefault(study, (line, training_settings(cfg)))
        assert settings == training_settings(cfg), f"{line!r} collides with {first!r}"
    assert len(studies) >= 3
