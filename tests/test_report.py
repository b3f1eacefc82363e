"""lrbatch report, import and dashboard on real studies: files valid, a real dashboard server."""

import csv
import json
import math
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import matplotlib.image
import optuna
import pytest
from conftest import ROOT

from lrbatch.cli import main
from lrbatch.config import ConfigError, load_config
from lrbatch.report.report import build_report, markdown_verdict, publish, summary, write_report
from lrbatch.search.importing import import_csv
from lrbatch.search.plan import SweepPlan
from lrbatch.search.sampler import LRBatchSampler, observations, stop_when_plan_finished
from lrbatch.search.study_io import load_points, open_study
from lrbatch.workers.sweep import run_sweep

SCHEMA = json.loads((ROOT / "src" / "lrbatch" / "report" / "summary.schema.json").read_text())


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A complete smoke sweep (three batch sizes) in its own SQLite file."""
    root = tmp_path_factory.mktemp("smoke")
    url = f"sqlite:///{root}/smoke.db"
    run_sweep(
        load_config(
            ROOT / "sweeps" / "smoke.yaml",
            ["sweep.batch_sizes=[32,128,512]", f"study.storage={url}"],
        )
    )
    return url, root


def test_the_noise_scale_the_trials_measured_is_in_the_report(
    smoke_study: tuple[str, Path],
) -> None:
    url, _ = smoke_study
    study = open_study(url, "smoke")
    report = build_report(study)
    noise = report.noise
    assert noise is not None and noise.trials > 0
    assert set(noise.batch_sizes) <= {32, 128, 512}
    assert [p.point for p in noise.points] == ["start", "10%", "50%", "end"]
    for p in noise.points:
        assert p.low <= p.b_simple <= p.high and p.trials <= noise.trials
    later = noise.points[1:]
    assert noise.span == (min(p.low for p in later), max(p.high for p in later))
    sources = {c.source for c in noise.comparisons}
    assert sources <= {f.law for f in report.fits} & {"saturating", "surge"}
    data = summary(report)
    assert data["noise_scale"]["trials"] == noise.trials
    assert data["noise_scale"]["text"] == report.theory()
    jsonschema.validate(data, SCHEMA)
    markdown = markdown_verdict(report)
    assert f"**Noise scale.** {report.theory()}" in markdown
    assert "| 10% |" in markdown
    drawn = {s.name: s.x[0] for s in report.figures()[0].series if s.name.startswith("B_simple")}
    middle = next(p for p in noise.points if p.point == "50%")
    if math.isfinite(middle.b_simple) and 32 / 4 <= middle.b_simple <= 512 * 4:  # drawn range
        assert drawn[f"B_simple at mid-training (trials): {middle.b_simple:.3g}"] == middle.b_simple


def test_report_files_are_valid(smoke_study: tuple[str, Path]) -> None:
    url, root = smoke_study
    study = open_study(url, "smoke")
    report = build_report(study)
    assert [o.batch_size for o in report.optima] == [32, 128, 512]
    written = write_report(report, study, root / "report")
    names = {p.name for p in written}
    assert {
        "optimal_lr.png",
        "metric_vs_lr.png",
        "heatmap.png",
        "report.md",
        "report.html",
        "trials.csv",
        "summary.json",
    } <= names
    curves = next(spec for spec in report.figures() if spec.key == "metric_vs_lr")
    assert [p.title.split(":")[0] for p in curves.panels] == ["B = 32", "B = 128", "B = 512"]
    for png in root.glob("report/*.png"):
        image = matplotlib.image.imread(png)
        assert image.shape[0] > 200 and image.shape[1] > 200

    class Divs(HTMLParser):
        plots = 0

        def handle_starttag(self, tag: str, attrs: list) -> None:
            if tag == "div" and ("class", "plotly-graph-div") in attrs:
                self.plots += 1

    parser = Divs()
    text = (root / "report" / "report.html").read_text()
    parser.feed(text)
    assert parser.plots == 3 and "Verdict" in text and "<script" in text  # plotly.js inline

    markdown = (root / "report" / "report.md").read_text()
    assert "**Verdict.**" in markdown and "![" in markdown and "| 512 |" in markdown

    data = json.loads((root / "report" / "summary.json").read_text())
    jsonschema.validate(data, SCHEMA)
    assert data["study"] == "smoke" and len(data["optima"]) == 3 and data["verdict"]["text"]
    rows = list(csv.DictReader((root / "report" / "trials.csv").open()))
    assert len(rows) == len(study.trials)


def test_summary_schema_rejects_a_broken_summary(smoke_study: tuple[str, Path]) -> None:
    data = summary(build_report(open_study(smoke_study[0], "smoke")))
    data["optima"][0]["lr_opt"] = "fast"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, SCHEMA)


def test_import_round_trips_a_csv(tmp_path: Path) -> None:
    rows = [
        {
            "batch_size": b,
            "lr": lr,
            "metric": "" if lr > 1 else (math.log(lr / (0.01 * b / 32)) ** 2 + s / 10),
            "seed": s,
            "steps": 100,
            "diverged": "true" if lr > 1 else "false",
        }
        for b in (32, 128, 512)
        for lr in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 3.0)
        for s in (0, 1)
    ]
    path = tmp_path / "grid.csv"
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    url = f"sqlite:///{tmp_path}/paper.db"
    assert import_csv(path, url, "paper") == len(rows)
    points = load_points(open_study(url, "paper").trials)
    assert sorted((p.batch_size, p.lr, p.seed) for p in points) == sorted(
        (r["batch_size"], r["lr"], r["seed"]) for r in rows
    )
    assert sum(p.diverged for p in points) == 6 and all(p.steps == 100 for p in points)
    report = build_report(open_study(url, "paper"))
    assert [o.batch_size for o in report.optima] == [32, 128, 512]
    for optimum in report.optima:
        assert optimum.lr_low <= 0.01 * optimum.batch_size / 32 * 1.5
        assert optimum.stability_edge == pytest.approx(3.0)


def test_import_refuses_a_bad_csv_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("batch_size,lr,metric\n32,0.1,1.0\n32,-0.1,1.0\n")
    url = f"sqlite:///{tmp_path}/bad.db"
    with pytest.raises(ConfigError, match=r"bad\.csv:3: lr='-0\.1' is not accepted"):
        import_csv(path, url, "bad")
    assert not (tmp_path / "bad.db").exists()
    path.write_text("batch,lr,metric\n32,0.1,1.0\n")
    with pytest.raises(ConfigError, match="lacks column"):
        import_csv(path, url, "bad")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # (no http_proxy)


def _get(url: str) -> dict:
    with _LOOPBACK.open(url, timeout=5) as response:
        return json.loads(response.read())


def _start_dashboard(url: str) -> tuple[subprocess.Popen[bytes], int]:
    """``lrbatch dashboard`` on a free port, once it answers (another port if this one was
    taken between finding it free and the server binding it)."""
    for attempt in range(3):
        port = _free_port()
        command = ["dashboard", "--storage", url, "--port", str(port)]
        server = subprocess.Popen(
            [sys.executable, "-m", "lrbatch", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while server.poll() is None:
            try:
                _get(f"http://127.0.0.1:{port}/api/studies")
                return server, port
            except OSError:
                if time.monotonic() > deadline:
                    server.kill()
                    raise AssertionError("dashboard did not start") from None
                time.sleep(0.5)
        output = server.stdout.read().decode() if server.stdout else ""
        if "in use" not in output or attempt == 2:
            raise AssertionError(output)
    raise AssertionError("unreachable")


def test_dashboard_serves_the_study_note_and_plots(smoke_study: tuple[str, Path]) -> None:
    url, _ = smoke_study
    study = open_study(url, "smoke")
    publish(build_report(study), study)
    publish(build_report(study), study)  # a second report replaces, never duplicates
    server, port = _start_dashboard(url)
    try:
        studies = _get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        (entry,) = [s for s in studies if s["study_name"] == "smoke"]
        detail = _get(f"http://127.0.0.1:{port}/api/studies/{entry['study_id']}")
        assert "Verdict" in detail["note"]["body"]
        ids = sorted(g["id"] for g in detail["plotly_graph_objects"])
        assert ids == ["lrbatch-heatmap", "lrbatch-metric_vs_lr", "lrbatch-optimal_lr"]
        assert len(detail["trials"]) == len(study.trials)
    finally:
        server.terminate()
        server.wait(timeout=10)


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian's package (.ci/run)
# headless on a closed network: without the background-networking flags it refuses connections
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# What a reader sees of each plotly figure on a page: its title, the points of each trace, and
# the rows a heatmap shows (the y axis's range, in rows).
_FIGURES_SHOWN = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => ({
    title: gd._fullLayout.title.text,
    top: gd.getBoundingClientRect().top,
    points: gd.data.map(t => [t.name, (t.x || []).length]),
    rows: gd.data.filter(t => t.type === 'heatmap').map(t => t.z.length),
    shown: gd._fullLayout.yaxis.range,
}))"""


def test_dashboard_in_a_browser_leads_with_the_verdict_and_every_point(
    smoke_study: tuple[str, Path], tmp_path: Path
) -> None:
    """``lrbatch dashboard`` in headless Chromium: its first page is lrbatch's (the verdict
    above the figures, every figure with its points, the heatmap a row per batch size), and
    Optuna's page of the study shows the heatmap's every row too. The study is the smoke
    sweep's with one run at lr 10 at B = 512 that diverged, so the heatmap marks a cell."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Chromium at {CHROMIUM} (Debian's chromium package)")
    url = f"sqlite:///{tmp_path}/smoke.db"
    shutil.copy(smoke_study[1] / "smoke.db", tmp_path / "smoke.db")
    study = open_study(url, "smoke")
    ran = next(t for t in study.trials if t.params.get("batch_size") == 512)
    study.add_trial(
        optuna.trial.create_trial(
            params={**ran.params, "lr": 10.0},
            distributions=ran.distributions,
            value=math.inf,
            user_attrs={**ran.user_attrs, "diverged": True},
        )
    )
    report = build_report(study)
    publish(report, study)
    batches = [o.batch_size for o in report.optima]
    server, port = _start_dashboard(url)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length === 3")
            verdict = page.locator("#verdict")
            assert verdict.is_visible() and verdict.inner_text().startswith("Verdict.")
            figures = {f["title"]: f for f in page.evaluate(_FIGURES_SHOWN)}
            box = verdict.bounding_box()
            assert box is not None and all(box["y"] < f["top"] for f in figures.values())
            assert page.locator("#graph-hyperparameter-importances").count() == 0  # Optuna's
            optimum = figures["Optimal learning rate vs batch size"]["points"]
            assert ["measured optimum (90% interval)", len(batches)] in optimum
            curves = figures[f"{report.metric} vs learning rate, per batch size"]["points"]
            assert sum(n for name, n in curves if name == "seed mean (min–max)") >= len(batches)
            heatmap = figures[f"{report.metric} over batch size × learning rate (× = diverged)"]
            assert heatmap["rows"] == [len(batches)]
            assert heatmap["shown"] == pytest.approx([-0.5, len(batches) - 0.5])  # every row

            page.goto(f"http://127.0.0.1:{port}/dashboard/studies/{study._study_id}")
            page.wait_for_selector("[id='user-defined-plot:lrbatch-heatmap'] .hm")
            (heatmap,) = [f for f in page.evaluate(_FIGURES_SHOWN) if f["rows"]]
            assert heatmap["shown"] == pytest.approx([-0.5, len(batches) - 0.5])
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_target_budget_report_fits_the_critical_batch(workdir: Path) -> None:
    cfg = load_config(
        ROOT / "sweeps" / "teacher_target.yaml",
        [
            "dataset.num_samples=1000",
            "sweep.batch_sizes=[8,32,128]",
            "sweep.base_batch=8",
            "sweep.seeds=1",
            "budget.max_epochs=12",
            "budget.eval_every_epochs=0.05",
            "budget.target=0.4",
            "sweep.tolerance=2",
        ],
    )
    run_sweep(cfg)
    study = open_study("sqlite:///runs/teacher_target.db", "teacher_target")
    report = build_report(study)
    assert report.metric == "steps to target" and report.critical is not None
    assert set(report.critical.steps_to_target) == {8, 32, 128}
    assert report.critical.steps_to_target[8] > report.critical.steps_to_target[128]
    assert report.critical.b_noise > 0 and report.critical.b_crit > 0
    written = {p.name for p in write_report(report, study, workdir / "report")}
    assert "steps_to_target.png" in written
    jsonschema.validate(json.loads((workdir / "report" / "summary.json").read_text()), SCHEMA)


def test_report_on_a_study_where_everything_diverged(tmp_path: Path) -> None:
    path = tmp_path / "diverged.csv"
    path.write_text("batch_size,lr,metric,diverged\n32,1.0,,true\n32,3.0,,true\n128,2.0,,true\n")
    url = f"sqlite:///{tmp_path}/d.db"
    import_csv(path, url, "d")
    study = open_study(url, "d")
    report = build_report(study)
    assert report.optima == [] and report.verdict is None
    written = {p.name for p in write_report(report, study, tmp_path / "out")}
    assert "optimal_lr.png" not in written and "summary.json" in written
    jsonschema.validate(json.loads((tmp_path / "out" / "summary.json").read_text()), SCHEMA)


def test_trials_csv_of_a_report_imports_back(smoke_study: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = smoke_study
    study = open_study(url, "smoke")
    write_report(build_report(study), study, tmp_path / "r")
    again = f"sqlite:///{tmp_path}/again.db"
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert import_csv(tmp_path / "r" / "trials.csv", again, "again") == len(complete)
    with pytest.raises(ConfigError, match="already exists"):
        import_csv(tmp_path / "r" / "trials.csv", again, "again")
    before = {o.batch_size: o.lr_opt for o in build_report(study).optima}
    after = {o.batch_size: o.lr_opt for o in build_report(open_study(again, "again")).optima}
    assert after == pytest.approx(before)


def target_optimum(batch: int) -> float:
    return 0.01 * batch / 16


def _target_budget_study() -> optuna.Study:
    """Trials as a target-budget sweep records them (see sweep._objective): the value is steps
    to the target; too low an lr trains to its cap without reaching it (steps inf,
    reached_target False, diverged False), too high an lr diverges. The optimum is linear in B."""
    study = optuna.create_study(direction="minimize")
    config = {"sweep": {"base_batch": 16, "base_lr": 0.013}, "budget": {"kind": "target"}}
    study.set_user_attr("lrbatch.config", config)
    distributions = {
        "batch_size": optuna.distributions.IntDistribution(16, 256, log=True),
        "lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True),
        "seed": optuna.distributions.IntDistribution(0, 1),
    }
    for batch in (16, 64, 256):
        for k in range(-4, 3):  # lr = optimum × 2^k
            lr = target_optimum(batch) * 2.0**k
            for seed in (0, 1):
                steps = 1000 * (1 + 64 / batch) * (1 + (k * math.log(2)) ** 2) + 10 * seed
                missed, diverged = k <= -3, k == 2
                attrs = {
                    "diverged": diverged,
                    "reached_target": None if diverged else not missed,
                    "steps": 5 if diverged else (50_000 if missed else round(steps)),
                }
                study.add_trial(
                    optuna.trial.create_trial(
                        params={"batch_size": batch, "lr": lr, "seed": seed},
                        distributions=distributions,
                        value=math.inf if missed or diverged else round(steps),
                        user_attrs=attrs,
                    )
                )
    return study


def test_a_missed_target_is_not_a_divergence_in_the_report_or_the_plan() -> None:
    study = _target_budget_study()
    report = build_report(study)
    assert report.metric == "steps to target" and report.critical is not None
    assert [o.batch_size for o in report.optima] == [16, 64, 256]
    for optimum in report.optima:
        # the edge is where runs diverged (4× the optimum), not where they missed the target
        assert optimum.stability_edge == pytest.approx(4 * target_optimum(optimum.batch_size))
        assert optimum.diverged == 2
    # linear from η0 = 0.013 lands at 1.3× each optimum, between lrs that reached the target
    linear = [r for r in report.regrets if r.rule == "linear"]
    assert len(linear) == 3 and all(math.isfinite(r.regret) for r in linear)
    # the plan reads the same trials the same way: a missed target bounds nothing
    seen = observations(study.trials)
    assert all(not o.diverged for o in seen if o.reached_target is False)
    plan = SweepPlan(batch_sizes=(16, 64, 256), base_batch=16, lr_min=1e-4, lr_max=1.0)
    for batch in (16, 64, 256):
        assert plan.stability_edge(seen, batch) == pytest.approx(4 * target_optimum(batch))


def test_trials_csv_of_a_target_study_imports_back_without_false_divergences(
    tmp_path: Path,
) -> None:
    study = _target_budget_study()
    write_report(build_report(study), study, tmp_path / "r")
    url = f"sqlite:///{tmp_path}/again.db"
    assert import_csv(tmp_path / "r" / "trials.csv", url, "again") == len(study.trials)
    points = load_points(open_study(url, "again").trials)
    assert sum(p.diverged for p in points) == 6  # two seeds × three batch sizes
    assert sum(p.reached_target is False for p in points) == 12
    again = build_report(open_study(url, "again"))
    assert [o.stability_edge for o in again.optima] == [
        o.stability_edge for o in build_report(study).optima
    ]


def test_a_rule_skipped_above_an_edge_measured_at_a_larger_batch_counts_as_diverged() -> None:
    # η0 = 4 at B0 = 32 is far above the stability edge (0.6 at every batch size): 4 and 1
    # diverge at 32, which bounds every rule at B=16 (4, 2.8, 2), so none is trained there;
    # nothing diverges at 16 itself (the search stays near its optimum, 0.032).
    plan = SweepPlan(
        batch_sizes=(16, 32, 64), base_batch=32, lr_min=1e-3, lr_max=10.0, base_lr=4.0, seeds=1
    )
    study = optuna.create_study(sampler=LRBatchSampler(plan, seed=0))
    study.set_user_attr("lrbatch.config", {"sweep": {"base_batch": 32}})

    def objective(trial: optuna.Trial) -> float:
        batch = trial.suggest_int("batch_size", 16, 64, log=True)
        lr = trial.suggest_float("lr", 1e-3, 10.0, log=True)
        trial.suggest_int("seed", 0, 0)
        trial.set_user_attr("diverged", lr > 0.6)
        return math.inf if lr > 0.6 else math.log(lr / (0.002 * batch)) ** 2

    study.optimize(objective, n_trials=100, callbacks=[stop_when_plan_finished])
    at_16 = [t for t in study.trials if t.params["batch_size"] == 16]
    assert at_16 and not any(t.user_attrs["diverged"] for t in at_16)
    tried = [t.params["lr"] for t in at_16]
    report = build_report(study)
    at_16 = [r for r in report.regrets if r.batch_size == 16]
    assert len(at_16) == 3
    for regret in at_16:
        assert not any(abs(lr / regret.predicted_lr - 1) < 0.01 for lr in tried)  # no trial
        assert math.isinf(regret.regret)  # ...yet the report says it is above the edge


def test_report_predicts_at_the_batch_sizes_asked_for(workdir: Path, capsys) -> None:
    url = f"sqlite:///{workdir}/sgd.db"
    import_csv(ROOT / "docs" / "results" / "sgd_mnist1d" / "trials.csv", url, "sgd")
    argv = ["report", "--storage", url, "--out", "out", "--no-dashboard"]
    assert main([*argv, "--predict", "2048", "--predict", "4096"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Recommended learning rate — study 'sgd'" in out and "B = 4096:" in out
    data = json.loads((workdir / "out" / "summary.json").read_text())
    jsonschema.validate(data, SCHEMA)
    assert [p["batch_size"] for p in data["predictions"]] == [2048, 4096]
    assert [p["extrapolation_octaves"] for p in data["predictions"]] == [1.0, 2.0]
    assert all(p["lr"] < p["stability_edge"] for p in data["predictions"])

    report = build_report(open_study(url, "sgd"), [4096])
    # diverged at two batch sizes (B = 32 and 256): the edge is a law
    assert report.edge is not None and report.edge.brackets == 2
    assert data["stability_edge"]["brackets"] == 2
    series = {s.name: s for s in report.figures()[0].series}
    assert list(series["predicted optimum (90% interval)"].x) == [4096]
    assert list(series["recommended: capped below the stability edge"].x) == [4096]
    extrapolated = [s for name, s in series.items() if name.endswith("(extrapolated)")]
    assert extrapolated and all(s.dashed for s in extrapolated)
    assert max(x for s in extrapolated for x in s.x if not math.isnan(x)) == pytest.approx(4096)
    measured = [s for name, s in series.items() if name.startswith("fit: ") and not s.dashed]
    assert measured and all(max(s.x) == pytest.approx(1024) for s in measured)
    assert list(series["stability edge: lowest lr that diverged"].x) == [32, 256]
    assert 1024 in series["no divergence up to (edge above)"].x
