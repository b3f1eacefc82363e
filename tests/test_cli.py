"""The command line as a user types it."""

import json
import math
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, TINY
from rich.console import Console

from lrbatch.cli import NO_ANSWER, main
from lrbatch.cli.sweep import _print_end
from lrbatch.search.plan import Observation, Proposal, SweepPlan
from lrbatch.workers.sweep import SweepOutcome


def test_predict_prints_each_rule(capsys) -> None:
    assert main(["predict", "--base-lr", "0.01", "--base-batch", "128", "--batch", "512"]) == 0
    out = capsys.readouterr().out
    assert "0.04" in out and "0.02" in out and "linear" in out and "square_root" in out
    assert (
        main(
            [
                "predict",
                "--base-lr",
                "0.01",
                "--base-batch",
                "128",
                "--batch",
                "512",
                "--b-noise",
                "512",
            ]
        )
        == 0
    )
    assert "saturating" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_code_2(capsys) -> None:
    assert main(["predict", "--base-lr", "-1", "--base-batch", "128", "--batch", "512"]) == 2
    assert "--base-lr must be a positive" in capsys.readouterr().out
    assert main(["sweep", str(ROOT / "sweeps" / "smoke.yaml"), "sweep.batch_sizes=[0]"]) == 2
    assert "sweep.batch_sizes=[0] is not accepted" in capsys.readouterr().out


def test_console_script_runs_a_sweep_and_resumes(workdir: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "lrbatch",
        "sweep",
        str(ROOT / "sweeps" / "smoke.yaml"),
        "sweep.batch_sizes=[32]",
        "sweep.seeds=1",
        "--trial-limit",
        "2",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert (
        "Paused after 2 trials" in first.stdout
        and "Optimal learning rate per batch size" in first.stdout
    )
    assert (workdir / "runs" / "smoke.db").exists()
    second = subprocess.run(command[:-2], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "Sweep complete" in second.stdout, (
        second.stdout + second.stderr
    )


def test_import_then_report_from_the_command_line(workdir: Path, capsys) -> None:
    assert main(["report"]) == 2
    assert "no study found in runs/" in capsys.readouterr().out
    grid = workdir / "grid.csv"
    rows = ["batch_size,lr,metric,seed"]
    for batch in (64, 256, 1024):
        for lr in (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64):
            for seed in (0, 1):
                optimum = 0.04 * (batch / 64) ** 0.5
                rows.append(f"{batch},{lr},{(math.log(lr / optimum)) ** 2 + 0.01 * seed},{seed}")
    grid.write_text("\n".join(rows) + "\n")
    url = f"sqlite:///{workdir}/paper.db"
    assert main(["import", str(grid), "--storage", url, "--study", "paper"]) == 0
    assert "Imported 42 trials" in capsys.readouterr().out
    assert main(["report", "--storage", url, "--study", "paper", "--out", "rep"]) == 0
    out = capsys.readouterr().out
    assert "Verdict:" in out and "square_root" in out
    assert {p.name for p in (workdir / "rep").iterdir()} >= {"summary.json", "report.html"}
    page = (workdir / "rep" / "report.html").read_text()  # the tables the terminal showed too
    for table in ("Optimal learning rate per batch size", "Each rule", "Laws fitted across"):
        assert table in page
    assert "90% interval" in page and "square_root" in page


def test_dashboard_on_a_port_in_use_is_a_clear_error(workdir: Path, capsys) -> None:
    url = f"sqlite:///{workdir}/grid.db"
    grid = workdir / "grid.csv"
    grid.write_text("batch_size,lr,metric\n64,0.01,2\n64,0.02,1\n")
    assert main(["import", str(grid), "--storage", url, "--study", "grid"]) == 0
    capsys.readouterr()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["dashboard", "--storage", url, "--port", str(port)]) == 2
    out = capsys.readouterr().out
    assert f"--port={port}: cannot listen there (Address already in use)" in " ".join(out.split())
    assert "Traceback" not in out


def test_a_sweep_where_every_trial_diverges_says_so_and_exits_3(workdir: Path, capsys) -> None:
    overrides = ["sweep.lr_min=1000", "sweep.lr_max=10000", "sweep.base_lr=2000"]
    # (the trials counted below are one worker's, one at a time: a second worker trains a
    # point beside the first before either has diverged)
    overrides += ["hardware.pack=1", "hardware.workers=1"]
    assert main(["sweep", str(ROOT / "sweeps" / "smoke.yaml"), *overrides]) == NO_ANSWER == 3
    out = " ".join(capsys.readouterr().out.split())  # (rich wraps long lines)
    last = out[out.index("No trial finished") :]
    # B=32: 2000 then lr_min; B=128: 2000 (its other rules lie above), then lr_min; no replicate
    assert last.startswith("No trial finished: all 4 diverged")
    assert "sweep.lr_min (now 1000)" in last and "Trials this run: 4." in last
    assert "Sweep complete" not in out


def test_a_target_no_trial_reaches_is_said_with_the_best_reached(workdir: Path, capsys) -> None:
    overrides = [
        *TINY,
        "dataset.num_samples=400",
        "budget.target=0.999",  # (10% of the labels are noise)
        "sweep.batch_sizes=[16]",
        "sweep.base_batch=16",
        "sweep.lr_min=0.05",
        "sweep.lr_max=0.2",
        "sweep.base_lr=0.1",
        "sweep.seeds=1",
    ]
    assert main(["sweep", str(ROOT / "sweeps" / "teacher_target.yaml"), *overrides]) == 3
    out = " ".join(capsys.readouterr().out.split())
    last = out[out.index("No trial reached the target") :]
    assert last.startswith("No trial reached the target (best: val_acc 0.")
    assert "target 0.999)" in last and "Sweep complete" not in out


REFERENCES = ("sgd_mnist1d", "adam_mnist1d", "lion_mnist1d")


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The three reference studies of docs/results/, imported from their trials.csv."""
    url = f"sqlite:///{tmp_path_factory.mktemp('references')}/references.db"
    for name in REFERENCES:
        trials = ROOT / "docs" / "results" / name / "trials.csv"
        assert main(["import", str(trials), "--storage", url, "--study", name]) == 0
    return url


@pytest.mark.parametrize("name", REFERENCES)
def test_predict_answers_what_lr_at_4096_from_a_reference_study(
    references: str, name: str, capsys
) -> None:
    capsys.readouterr()
    argv = ["predict", "--study", name, "--storage", references, "--batch", "4096", "--json"]
    assert main(argv) == 0
    (p,) = json.loads(capsys.readouterr().out)["predictions"]
    assert p["batch_size"] == 4096 and p["extrapolation_octaves"] == pytest.approx(2.0)
    assert 0 < p["lr"] < p["stability_edge"] and p["lr"] <= p["stability_edge_low"]
    assert p["lr_low"] < p["lr_high"] and p["law"] in p["laws"]
    assert {"linear", "power_law", "saturating", "surge"} <= set(p["laws"])
    assert sum(law["weight"] for law in p["laws"].values()) == pytest.approx(1.0)
    assert set(p["rules"]) == {"constant", "linear", "square_root"}
    for entry in [*p["laws"].values(), *p["rules"].values()]:
        assert entry["above_edge"] == (entry["lr"] >= p["stability_edge_low"])
    far = "2.0 octaves above the largest batch size measured (1024)"
    assert any(far in warning for warning in p["warnings"])


def test_predict_from_a_study_prints_the_answer_and_the_evidence(references: str, capsys) -> None:
    capsys.readouterr()
    argv = ["predict", "--study", "adam_mnist1d", "--storage", references]
    assert main([*argv, "--batch", "4096", "--batch", "64"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Recommended learning rate" in out and "2.0 octaves" in out and "warning:" in out
    assert "B = 64:" in out and "measured at this batch size" in out
    # an imported grid has no recorded anchor: the rules start from the optimum at the smallest B
    from lrbatch.report.report import build_report
    from lrbatch.search.study_io import open_study

    anchor = re.search(r"rules from η0 = ([\d.e-]+) at B0 = 16", out)
    base_lr = build_report(open_study(references, "adam_mnist1d")).base_lr
    assert anchor is not None and float(anchor.group(1)) == pytest.approx(base_lr, rel=5e-3)


def test_predict_names_the_setting_it_cannot_use(references: str, workdir: Path, capsys) -> None:
    study = ["--study", "adam_mnist1d", "--storage", references]
    one_batch = workdir / "one.csv"
    one_batch.write_text("batch_size,lr,metric\n64,0.01,2\n64,0.02,1\n64,0.04,2\n")
    assert main(["import", str(one_batch), "--storage", references, "--study", "one"]) == 0
    cases = [
        ([*study, "--base-lr", "0.01", "--batch", "4096"], "--base-lr given with --study"),
        (["--study", "nope", "--storage", references, "--batch", "4096"], "'nope' is not in"),
        ([*study, "--batch", "0"], "--batch 0: accepted: a positive"),
        (["--batch", "4096"], "--base-lr and --base-batch missing"),
        (["--base-lr", "1", "--base-batch", "16", "--batch", "64", "--json"], "--json: accepted"),
        (["--study", "one", "--storage", references, "--batch", "4096"], "1 of 1 batch sizes"),
    ]
    capsys.readouterr()
    for args, message in cases:
        assert main(["predict", *args]) == 2, args
        assert message in " ".join(capsys.readouterr().out.split())
    assert main(["report", *study, "--predict", "-8"]) == 2
    assert "--predict -8: accepted: a positive" in capsys.readouterr().out


def test_predict_reads_the_last_sweeps_storage_without_storage(workdir: Path, capsys) -> None:
    trials = ROOT / "docs" / "results" / "lion_mnist1d" / "trials.csv"
    (workdir / "runs").mkdir()
    assert (
        main(["import", str(trials), "--storage", "sqlite:///runs/lion.db", "--study", "lion"]) == 0
    )
    capsys.readouterr()
    assert main(["predict", "--study", "lion", "--batch", "2048", "--json"]) == 0
    (p,) = json.loads(capsys.readouterr().out)["predictions"]
    assert p["batch_size"] == 2048 and p["extrapolation_octaves"] == pytest.approx(1.0)


def test_a_budget_spent_while_adding_seeds_says_every_optimum_is_pinned(capsys) -> None:
    plan = SweepPlan(
        batch_sizes=(32, 64), base_batch=32, lr_min=1e-3, lr_max=10.0, base_lr=0.1,
        seeds=2, max_seeds=6, tolerance=1.4,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    seen: list[Observation] = []
    while isinstance(step := plan.next(seen), Proposal) and step.seed < 2:  # noisy at 64
        noise = (0.3 if step.batch_size == 64 else 0.001) * rng.normal()
        value = math.log(step.lr / 0.1) ** 2 + noise
        seen.append(Observation(step.batch_size, step.lr, step.seed, value, reason=step.reason))
    assert isinstance(step, Proposal) and step.batch_size == 64  # the budget ends here
    outcome = SweepOutcome("s", "sqlite:///s.db", "budget", len(seen), plan, seen)
    assert _print_end(outcome, Console(width=400)) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith(
        "Sweep stopped: its trial budget (sweep.max_trials=200) is spent; every optimum is "
        "pinned and replicated, but B=64 is still loose: raise it and rerun to add seeds there "
        "(up to sweep.max_seeds=6)."
    )


def test_the_readmes_own_model_and_data_example_runs(workdir: Path, capsys) -> None:
    """docs/configuration.md, "Your own model and data": the command as written (mypkg is
    tests/mypkg)."""
    readme = (ROOT / "docs" / "configuration.md").read_text().splitlines()
    command = next(line for line in readme if line.startswith("lrbatch sweep model._target_="))
    argv = shlex.split(command)[1:]
    tiny = [*TINY, "sweep.batch_sizes=[16,64]", "sweep.seeds=1", "--trial-limit", "2"]
    assert main([*argv, *tiny]) == 0
    assert "Paused after 2 trials" in " ".join(capsys.readouterr().out.split())


def test_piped_output_sizes_tables_to_their_content(workdir: Path) -> None:
    """Piped or logged, no table is cut at 80 columns (`0.0328–0…`): each is as wide as it is."""
    trials = ROOT / "docs" / "results" / "sgd_mnist1d" / "trials.csv"
    url = "sqlite:///runs/sgd.db"
    assert main(["import", str(trials), "--storage", url, "--study", "sgd"]) == 0
    report = [sys.executable, "-m", "lrbatch", "report", "--no-dashboard"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # (this checkout's lrbatch)
    piped = subprocess.run(report, capture_output=True, text=True, timeout=300, env=env)
    assert piped.returncode == 0, piped.stderr
    assert "…" not in piped.stdout and "0.0315–0.038" in piped.stdout
    assert max(len(line) for line in piped.stdout.splitlines()) > 100


def test_cfg_job_prints_the_config_and_the_plans_first_trials(workdir: Path, capsys) -> None:
    """Hydra's `--cfg job`, with options among the overrides: prints, trains and creates nothing."""
    smoke = str(ROOT / "sweeps" / "smoke.yaml")
    argv = ["sweep", smoke, "sweep.seeds=1", "--trial-limit", "5", "sweep.batch_sizes=[32,64]"]
    assert main([*argv, "--cfg", "job"]) == 0
    out = capsys.readouterr().out
    import yaml

    printed = yaml.safe_load(out)
    assert printed["sweep"]["seeds"] == 1 and printed["sweep"]["batch_sizes"] == [32, 64]
    assert printed["model"]["hidden"] == [128, 128] and printed["study"]["name"] == "smoke"
    assert "# The plan's first trials in a new study" in out
    assert re.search(r"#   B=32 lr=0.1 seed=0 \(rule:", out)  # (smoke: base_lr 0.1 at B0=32)
    assert list(workdir.iterdir()) == []


def test_studies_lists_each_study_with_its_state_and_deletes_one(
    workdir: Path, capsys, monkeypatch
) -> None:
    smoke = str(ROOT / "sweeps" / "smoke.yaml")
    assert main(["sweep", smoke, "--trial-limit", "0"]) == 0  # creates the study, trains nothing
    grid = workdir / "grid.csv"
    grid.write_text("batch_size,lr,metric\n64,0.01,2\n64,0.02,1\n64,0.04,2\n")
    assert main(["import", str(grid), "--storage", "sqlite:///runs/paper.db", "--study", "p"]) == 0
    capsys.readouterr()
    assert main(["studies"]) == 0
    rows = {line.split("│")[2].strip(): line for line in capsys.readouterr().out.splitlines()[4:-1]}
    assert set(rows) == {"smoke", "p"}
    assert "paused" in rows["smoke"] and re.search(r"imported\s*│\s*3\s*│", rows["p"])
    monkeypatch.setattr("lrbatch.cli.studies._confirm", lambda question, command: False)
    assert main(["studies", "--delete", "p"]) == 0
    assert "Nothing deleted." in capsys.readouterr().out
    monkeypatch.setattr("lrbatch.cli.studies._confirm", lambda question, command: True)
    assert main(["studies", "--delete", "p"]) == 0
    assert "Deleted study 'p' (3 trials) from sqlite:///runs/paper.db." in capsys.readouterr().out
    smoke_db = ["--storage", "sqlite:///runs/smoke.db"]
    assert main(["studies", *smoke_db, "--delete", "smoke", "--yes"]) == 0
    capsys.readouterr()
    assert main(["studies"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("No study in sqlite:///runs/") and "smoke.db" in out and "paper" in out


def test_ctrl_c_is_not_logged_with_optunas_traceback() -> None:
    """Optuna logs an interrupted trial as "Trial N failed ..." with ~40 lines of traceback:
    lrbatch's own "Interrupted." line says it instead; other warnings still show."""
    import logging

    from lrbatch.console import quiet_libraries as _quiet_libraries

    _quiet_libraries()
    handlers = logging.getLogger("optuna").handlers
    interrupted = (KeyboardInterrupt, KeyboardInterrupt(), None)
    trial_failed = logging.LogRecord(
        "optuna.study._optimize", logging.WARNING, __file__, 1, "Trial 0 failed", (), interrupted
    )
    warning = logging.LogRecord("optuna", logging.WARNING, __file__, 1, "a warning", (), None)
    assert handlers and all(not h.filter(trial_failed) and h.filter(warning) for h in handlers)


def test_import_says_how_many_rows_it_read_as_diverged(workdir: Path, capsys) -> None:
    grid = workdir / "grid.csv"
    grid.write_text("batch_size,lr,metric,diverged\n64,0.01,2,\n64,0.02,1,no\n64,0.04,,\n")
    assert main(["import", str(grid), "--storage", "sqlite:///g.db", "--study", "g"]) == 0
    out = capsys.readouterr().out
    assert "Imported 3 trials (1 diverged: said so, or an empty or infinite metric)" in out
