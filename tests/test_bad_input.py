"""Every bad input: one line naming what is wrong (exit status 2), and nothing created or changed.

A new case is a row of ``CASES``: the command (``{sweeps}`` is the checkout's sweeps/, ``{dir}``
the directory it runs in), and words of the one line it must print. Each runs in a directory
holding ``runs/paper.db`` (a study, ``paper``), ``grid.csv``, ``sweeps/smoke.yaml`` and
``empty.yaml``; the test checks that none of them changed and nothing was added.
"""

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from conftest import ROOT

from lrbatch.cli import main

SMOKE = "{sweeps}/smoke.yaml"
PAPER = "sqlite:///runs/paper.db"
BAD_DATA = ["sweep", "dataset._target_=mypkg.data.bad"]  # (tests/mypkg)

CASES: list[tuple[list[str], str]] = [
    # values out of range
    (["predict", "--base-lr", "-1", "--base-batch", "128", "--batch", "512"], "--base-lr must be"),
    (["sweep", SMOKE, "sweep.batch_sizes=[0]"], "sweep.batch_sizes=[0] is not accepted"),
    # Hydra's habits
    (["sweep", "--info"], "--info is Hydra's"),
    (["sweep", "--hydra-help"], "--hydra-help is Hydra's"),
    (["sweep", "--cfg", "hydra"], "--cfg hydra: accepted: --cfg job"),
    (["noise-scale", "--info"], "--info is Hydra's"),
    (["sweep", "sweep.seeds=1", SMOKE], "smoke.yaml comes after overrides"),
    (["sweep", "sweeps/smoke"], "'sweeps/smoke' is not a sweep file; accepted: its file name"),
    (["sweep", "smoke"], "accepted: its file name, sweeps/smoke.yaml"),
    (["sweep", "adam"], "'adam' is neither a sweep file nor an override"),
    (["sweep", "--bogus", "sweep.seeds=1"], "unrecognized arguments: --bogus"),
    (["report", "extra"], "unrecognized arguments: extra"),
    (["predict", "--base-lr", "0.1"], "the following arguments are required: --batch"),
    # reading a storage never creates one
    (["report", "--storage", "sqlite:///runs/typo.db"], "there is no file runs/typo.db"),
    (["predict", "--study", "p", "--storage", "sqlite:///p.db", "--batch", "8"], "no file p.db"),
    (["worker", "--storage", "sqlite:///runs/new.db", "--study", "x"], "no file runs/new.db"),
    (["dashboard", "--storage", "sqlite:///runs/nope.db"], "there is no file runs/nope.db"),
    (["noise-scale", "--study", "p", "--storage", "sqlite:///p.db"], "there is no file p.db"),
    (["studies", "--storage", "sqlite:///runs/typo.db"], "there is no file runs/typo.db"),
    (["sweep", SMOKE, "study.storage=sqlite://runs/x.db"], "has a host part ('runs')"),
    (["sweep", SMOKE, "study.storage=sqlite://runs/x.db", "--cfg", "job"], "has a host part"),
    (["worker", "--storage", PAPER, "--study", "nope"], "'nope' is not in"),
    # tracebacks before
    (["import", "missing.csv", "--storage", PAPER, "--study", "q"], "missing.csv: cannot be read"),
    (["import", "runs", "--storage", PAPER, "--study", "q"], "runs: cannot be read (Is a direc"),
    (["report", "--storage", PAPER, "--out", "/proc/nope/rep"], "--out /proc/nope/rep: cannot"),
    (["report", "--storage", PAPER, "--out", "grid.csv"], "--out grid.csv: cannot write"),
    (["sweep", SMOKE, "study.storage=sqlite:////proc/nope/x.db"], "cannot create /proc/nope/x.db"),
    ([*BAD_DATA, "+dataset.kind=labels_n_by_2"], "y_train has shape (384, 2) and dtype"),
    # the data blamed, not the model or optimizer
    (
        [*BAD_DATA, "+dataset.kind=empty_val"],
        "(mypkg.data.bad): ValueError: TensorData x_val has no",
    ),
    (
        [*BAD_DATA, "+dataset.kind=negative_labels"],
        "mypkg.data.bad): ValueError: TensorData y_train holds",
    ),
    ([*BAD_DATA, "+dataset.kind=object_dtype"], "x_train is an array of dtype object"),
    # install hints keep their brackets (rich markup)
    (
        ["sweep", SMOKE, "study.storage=postgresql+pg8000://u@h/db"],
        "pip install 'lrbatch[postgres]'",
    ),
    (["sweep", "dataset=mnist", "dataset.data_dir=nodata"], "pip install 'lrbatch[vision]'"),
    # silently accepted before
    (["sweep", SMOKE, "--trial-limit", "-1"], "--trial-limit -1: accepted: 0 (create the study"),
    (["worker", "--storage", PAPER, "--study", "paper", "--trial-limit", "-1"], "--trial-limit -1"),
    (["sweep", "empty.yaml"], "sweep file 'empty.yaml' holds nothing; accepted: a mapping"),
    (["sweep", "list.yaml"], "sweep file 'list.yaml' holds list; accepted: a mapping"),
    (["import", "maybe.csv", "--storage", PAPER, "--study", "q"], "maybe.csv:3: diverged='maybe'"),
    (["import", "short.csv", "--storage", PAPER, "--study", "q"], "short.csv:2: the row's fields"),
    (["import", "nan.csv", "--storage", PAPER, "--study", "q"], "nan.csv:2: metric='' is not acc"),
    # lrbatch studies
    (
        ["studies", "--delete", "paper"],
        "--delete paper: no terminal to confirm on; accepted: --yes",
    ),
    (["studies", "--delete", "nope", "--yes"], "no studies of that name in runs/; accepted: one"),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory each case starts from."""
    where = tmp_path_factory.mktemp("template")
    (where / "runs").mkdir()
    (where / "sweeps").mkdir()
    shutil.copy(ROOT / "sweeps" / "smoke.yaml", where / "sweeps")
    grid = where / "grid.csv"
    grid.write_text("batch_size,lr,metric\n64,0.01,2\n64,0.02,1\n64,0.04,2\n")
    url = f"sqlite:///{where}/runs/paper.db"
    assert main(["import", str(grid), "--storage", url, "--study", "paper"]) == 0
    (where / "empty.yaml").write_text("# nothing here yet\n")
    (where / "list.yaml").write_text("- sweep.seeds=1\n")
    header = "batch_size,lr,metric,diverged\n"
    (where / "maybe.csv").write_text(header + "64,0.01,2,false\n64,0.02,1,maybe\n")
    (where / "short.csv").write_text(header + "64,0.01\n")
    (where / "nan.csv").write_text(header + "64,0.01,,false\n")
    return where


def _state(directory: Path) -> dict[str, object]:
    """Every file's content; a SQLite database's as SQL (read through its write-ahead log, which
    an engine still open in this process keeps beside it)."""
    state: dict[str, object] = {}
    for path in sorted(directory.rglob("*")):
        if not path.is_file() or path.name.endswith(("-wal", "-shm")):
            continue
        if path.suffix == ".db":
            with closing(sqlite3.connect(path)) as connection:
                state[str(path.relative_to(directory))] = list(connection.iterdump())
        else:
            state[str(path.relative_to(directory))] = path.read_bytes()
    return state


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(
    argv: list[str], message: str, template: Path, workdir: Path, capsys
) -> None:
    shutil.copytree(template, workdir, dirs_exist_ok=True)
    before = _state(workdir)
    argv = [a.format(sweeps=ROOT / "sweeps", dir=workdir) for a in argv]
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert message in lines[0]
    assert _state(workdir) == before
