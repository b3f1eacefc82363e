"""``lrbatch report``: a study turned into the answer, as a table, files and dashboard views.

The analysis itself is in :mod:`lrbatch.science.analysis` (pure functions); this module reads the
study, calls it, and writes what a user reads: a rich table with the verdict, a report
directory (PNG plots, a self-contained HTML report, ``trials.csv``, ``summary.json``) and the
same figures and verdict saved into the study for optuna-dashboard.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Group
from rich.table import Table
from rich.text import Text

from lrbatch import __version__
from lrbatch.console import terminal_html
from lrbatch.report.figures import (
    FigureSpec,
    curves_figure,
    heatmap_figure,
    optimum_figure,
    target_figure,
    to_plotly,
    to_png,
)
from lrbatch.report.predictions import prediction_view
from lrbatch.science import (
    BatchOptimum,
    CriticalBatch,
    EdgeFit,
    LawFit,
    MeasuredNoise,
    Prediction,
    RuleRegret,
    TrialPoint,
    Verdict,
    batch_optima,
    compare,
    critical_batch,
    fit_edge,
    fit_laws,
    measured_noise,
    predict,
    predict_at,
    rule_regrets,
    theory_text,
    verdict,
)
from lrbatch.search import (
    NoiseRun,
    format_lr,
    load_points,
    noise_records,
    outcome,
    recorded_noise_run,
    sweep_anchor,
)

__all__ = [
    "SCHEMA",
    "Report",
    "build_report",
    "json_ready",
    "publish",
    "render",
    "report_html",
    "summary",
    "write_report",
]

SCHEMA = "lrbatch.report/1"  # summary.json's "schema"; JSON Schema: summary.schema.json
_DEFAULT_RULES = ("constant", "linear", "square_root")


@dataclass(frozen=True)
class Report:
    """Everything the report shows, computed from one study."""

    study_name: str
    metric: str
    minimize: bool
    base_batch: int
    base_lr: float | None  # η0 anchoring the rules (configured, else the optimum at B0)
    rules: tuple[str, ...]
    b_noise: float | None
    eps_max: float | None
    points: list[TrialPoint]
    optima: list[BatchOptimum]
    fits: list[LawFit]
    verdict: Verdict | None
    regrets: list[RuleRegret]
    critical: CriticalBatch | None
    edge: EdgeFit | None = None  # the stability edge's law across batch sizes
    predictions: list[Prediction] = field(default_factory=list)  # at the batch sizes asked for
    noise: MeasuredNoise | None = None  # B_simple the trials measured, against the fits
    noise_run: NoiseRun | None = None  # a `lrbatch noise-scale --study` run recorded on it

    def theory(self) -> str | None:
        """What the measured noise scale says about the fitted batch scales (None: no trial
        recorded it)."""
        if self.noise is None:
            return None
        return theory_text(self.noise, self.verdict.supported if self.verdict else ())

    def rule_lines(self) -> dict[str, list[float]]:
        """Each rule's learning rate at each measured batch size."""
        if self.base_lr is None:
            return {}
        lines: dict[str, list[float]] = {}
        for optimum in self.optima:
            predicted = predict(
                self.base_lr,
                self.base_batch,
                optimum.batch_size,
                self.rules,
                self.b_noise,
                self.eps_max,
            )
            for rule, lr in predicted.items():
                lines.setdefault(rule, []).append(lr)
        return lines

    def supported_fits(self) -> list[LawFit]:
        """The fitted laws the verdict supports (the plot shows only these)."""
        supported = set(self.verdict.supported) if self.verdict else set()
        return [fit for fit in self.fits if fit.law in supported]

    def figures(self) -> list[FigureSpec]:
        specs = [
            curves_figure(self.points, self.metric, self.minimize, self.optima, self.rule_lines()),
            heatmap_figure(self.points, self.metric, self.minimize),
        ]
        if self.optima:  # none when every trial diverged
            fits, rules = self.supported_fits(), self.rule_lines()
            measured = _measured_lines(self)
            specs.insert(
                0, optimum_figure(self.optima, fits, rules, self.edge, self.predictions, measured)
            )
        if self.critical is not None:
            specs.append(target_figure(self.critical))
        return specs


def build_report(study: optuna.Study, predict_batches: Sequence[int] = ()) -> Report:
    """Analyse a study made by ``lrbatch sweep`` (or ``lrbatch import``).

    Args:
        study: the study.
        predict_batches: effective batch sizes to predict the learning rate at
            (:func:`lrbatch.science.analysis.predict_at`); none when fewer than two batch sizes
            bracketed their optimum.

    Raises:
        ValueError: a batch size in ``predict_batches`` that is not positive.
    """
    config: dict[str, Any] = study.user_attrs.get("lrbatch.config") or {}
    sweep = config.get("sweep", {})
    budget = config.get("budget", {})
    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    trials = study.get_trials(deepcopy=False)  # read once: points, anchor and noise scale
    points = load_points(trials)
    optima = batch_optima(points, minimize=minimize)
    batches = [o.batch_size for o in optima]
    anchor_batch, anchor_lr = sweep_anchor(trials)
    base_batch = int(sweep.get("base_batch") or anchor_batch or (min(batches) if batches else 0))
    base_lr = (
        sweep.get("base_lr")
        or anchor_lr
        or next((o.lr_opt for o in optima if o.batch_size == base_batch), None)
    )
    rules = tuple(sweep.get("rules") or _DEFAULT_RULES)
    b_noise, eps_max = sweep.get("b_noise"), sweep.get("eps_max")
    fits = fit_laws(optima) if len(optima) >= 2 else []
    regrets = (
        []
        if base_lr is None
        else rule_regrets(points, optima, base_batch, base_lr, rules, minimize, b_noise, eps_max)
    )
    target = budget.get("kind") == "target" or any(p.reached_target is not None for p in points)
    edge = fit_edge(optima)
    critical = critical_batch(points) if target else None
    noise = measured_noise(noise_records(trials), optima)
    predictions = []
    if predict_batches and sum(o.bracketed for o in optima) >= 2:
        predictions = predict_at(
            optima, predict_batches, edge, base_batch, base_lr, rules, b_noise, eps_max=eps_max
        )
    return Report(
        study_name=study.study_name,
        metric="steps to target"
        if target
        else str(config.get("study", {}).get("metric", "metric")),
        minimize=minimize,
        base_batch=base_batch,
        base_lr=base_lr,
        rules=rules,
        b_noise=b_noise,
        eps_max=eps_max,
        points=points,
        optima=optima,
        fits=fits,
        verdict=verdict(fits, optima, base_batch, base_lr) if optima else None,
        regrets=regrets,
        critical=critical,
        edge=edge,
        predictions=predictions,
        noise=None if noise is None else compare(noise, fits, critical),
        noise_run=recorded_noise_run(study),
    )


def _measured_lines(report: Report) -> dict[str, tuple[float, float] | None]:
    """What the optimal-lr figure draws from measurement alone: B_simple the trials measured at
    mid-training and at the end (``"50%"``, ``"end"``: value and the interval's lower end) and,
    from a recorded plain-SGD noise-scale run, (ε_max, B_simple) of its optimum curve
    (``"sgd_optimum"``)."""
    run = report.noise_run
    points = {} if report.noise is None else {p.point: p for p in report.noise.points}
    lines: dict[str, tuple[float, float] | None] = {
        name: (points[name].b_simple, points[name].low) for name in ("50%", "end") if name in points
    }
    lines["sgd_optimum"] = (run.eps_max, run.b_simple) if run and run.plain_sgd else None
    return lines


def _regret_status(regret: RuleRegret) -> str:
    """measured, interpolated, diverged or outside tried range (regret null for the last two)."""
    if math.isinf(regret.regret):
        return "diverged"
    if math.isnan(regret.regret):
        return "outside tried range"
    return "measured" if regret.measured else "interpolated"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def json_ready(value: Any) -> Any:
    """``value`` with non-finite floats as None, tuples as lists and keys as strings."""
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def summary(report: Report) -> dict[str, Any]:
    """``summary.json``'s content (schema :data:`SCHEMA`; non-finite numbers become null)."""
    return json_ready(
        {
            "schema": SCHEMA,
            "lrbatch_version": __version__,
            "study": report.study_name,
            "metric": report.metric,
            "direction": "minimize" if report.minimize else "maximize",
            "base_point": {"batch_size": report.base_batch, "lr": report.base_lr},
            "trials": len(report.points),
            "optima": [asdict(o) for o in report.optima],
            "fits": [
                {**asdict(f), "intervals": {k: list(v) for k, v in f.intervals.items()}}
                for f in report.fits
            ],
            "verdict": None if report.verdict is None else asdict(report.verdict),
            "regrets": [{**asdict(r), "status": _regret_status(r)} for r in report.regrets],
            "critical_batch": None if report.critical is None else asdict(report.critical),
            "stability_edge": None if report.edge is None else asdict(report.edge),
            "predictions": [asdict(p) for p in report.predictions],
            "noise_scale": None
            if report.noise is None
            else {**asdict(report.noise), "text": report.theory()},
        }
    )


def _verdict_text(report: Report) -> str:
    if report.verdict is None:
        return "Fewer than two batch sizes measured: no law can be fitted yet."
    return report.verdict.text


def _lr(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else format_lr(value)


def render(report: Report) -> Group:
    """The answer for the terminal: optima, rules' ratios and regrets, fitted laws, verdict."""
    optima = Table(
        title=f"Optimal learning rate per batch size — study {report.study_name!r}",
        title_justify="left",
    )
    for column in (
        "batch",
        "optimal lr",
        "90% interval",
        report.metric,
        "trials",
        "seeds",
        "diverged from",
    ):
        optima.add_column(column, justify="right")
    optima.add_column("note")
    for o in report.optima:
        note = "" if o.bracketed else "not bracketed: best at the edge of what was tried"
        optima.add_row(
            str(o.batch_size),
            _lr(o.lr_opt),
            f"{_lr(o.lr_low)}–{_lr(o.lr_high)}",
            f"{o.value_opt:.4g}",
            str(o.trials),
            str(o.seeds),
            _lr(o.stability_edge),
            note,
        )

    rules = Table(
        title=f"Each rule, anchored at η0 = {_lr(report.base_lr)} at B0 = {report.base_batch}: "
        f"predicted/optimal lr (regret in {report.metric})",
        title_justify="left",
    )
    rules.add_column("batch", justify="right")
    for rule in report.rules:
        rules.add_column(rule, justify="right")
    for batch in [o.batch_size for o in report.optima]:
        rules.add_row(str(batch), *_rule_cells(report, batch))

    laws = Table(title="Laws fitted across batch sizes (log–log)", title_justify="left")
    for column in (
        "law",
        "parameters (90% interval)",
        "rms log error",
        "AIC",
        "leave-one-out rms",
    ):
        laws.add_column(column, justify="right" if column != "law" else "left")
    for fit in sorted(report.fits, key=lambda f: f.aicc):
        params = ", ".join(
            f"{k} = {v:.3g} [{report_interval(fit, k)}]" for k, v in fit.params.items()
        )
        laws.add_row(
            fit.law, params, f"{fit.rms_log_error:.3f}", f"{fit.aicc:.1f}", f"{fit.loo_rms:.3f}"
        )

    parts: list[Any] = [optima, rules, laws]
    if report.predictions:
        parts.append(
            prediction_view(
                report.study_name, report.predictions, report.base_batch, report.base_lr
            )
        )
    if report.critical is not None:
        c = report.critical
        parts.append(
            Text(
                f"Critical batch (McCandlish et al. 2018): B_noise ≈ {c.b_noise:.3g} "
                f"[{c.b_noise_interval[0]:.3g}–{c.b_noise_interval[1]:.3g}], "
                f"S_min ≈ {c.s_min:.3g} steps; under this model B_crit = E_min/S_min = B_noise."
            )
        )
    if report.noise is not None:
        parts.append(_noise_table(report.noise))
    parts.append(Text("Verdict: " + _verdict_text(report), style="bold"))
    if report.noise is not None:
        parts.append(Text("Noise scale: " + str(report.theory()), style="bold"))
    return Group(*parts)


def _noise_table(noise: MeasuredNoise) -> Table:
    """B_simple per point of the runs, pooled over the trials near the optima."""
    table = Table(
        title="Gradient noise scale measured in the trials near each optimum "
        f"({noise.trials} trials, B = {', '.join(map(str, noise.batch_sizes))})",
        title_justify="left",
    )
    for column in ("point of the run", "B_simple", "90% interval", "trials"):
        table.add_column(column, justify="right", no_wrap=True)
    for p in noise.points:
        table.add_row(
            p.point, _scale(p.b_simple), f"{_scale(p.low)}–{_scale(p.high)}", str(p.trials)
        )
    return table


def _scale(value: float) -> str:
    return "unresolved" if not math.isfinite(value) else f"{value:.3g}"


def report_interval(fit: LawFit, key: str) -> str:
    low, high = fit.intervals.get(key, (math.nan, math.nan))
    return f"{low:.3g}–{high:.3g}"


def _rule_cells(report: Report, batch: int) -> list[str]:
    """Each rule's ratio and regret at ``batch``, as table cells."""
    cells = []
    for rule in report.rules:
        r = next((r for r in report.regrets if r.rule == rule and r.batch_size == batch), None)
        cells.append("—" if r is None else f"×{r.ratio:.2g} ({_regret(r)})")
    return cells


def _regret(r: RuleRegret) -> str:
    if math.isinf(r.regret):
        return "diverged"
    if math.isnan(r.regret):
        return "outside tried range"
    return f"+{r.regret:.3g}" + ("" if r.measured else " interp.")


def write_report(report: Report, study: optuna.Study, out_dir: Path) -> list[Path]:
    """Write PNGs, ``report.html``, ``trials.csv`` and ``summary.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [to_png(spec, out_dir / f"{spec.key}.png") for spec in report.figures()]
    html_path = out_dir / "report.html"
    html_path.write_text(report_html(report))
    written.append(html_path)
    figures = "\n".join(f"![{spec.title}]({spec.key}.png)" for spec in report.figures())
    markdown = out_dir / "report.md"
    markdown.write_text(markdown_verdict(report) + "\n\n" + figures + "\n")
    written.append(markdown)
    written.append(_write_trials(study, out_dir / "trials.csv"))
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary(report), indent=2, allow_nan=False))
    written.append(summary_path)
    return written


def _write_trials(study: optuna.Study, path: Path) -> Path:
    columns = [
        "number",
        "state",
        "batch_size",
        "lr",
        "seed",
        "value",
        "diverged",
        "reached_target",
        "reason",
        "steps",
        "samples",
        "micro_batch",
        "accumulation_steps",
        "wall_time_s",
        "device",
    ]
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        for t in study.get_trials(deepcopy=False):
            a = t.user_attrs
            ended = outcome(t) if t.state == TrialState.COMPLETE else None
            writer.writerow(
                [
                    t.number,
                    t.state.name,
                    t.params.get("batch_size"),
                    t.params.get("lr"),
                    t.params.get("seed"),
                    t.value,
                    None if ended is None else ended.diverged,
                    None if ended is None else ended.reached_target,
                    a.get("reason"),
                    a.get("steps"),
                    a.get("samples"),
                    a.get("micro_batch"),
                    a.get("accumulation_steps"),
                    a.get("wall_time_s"),
                    a.get("device"),
                ]
            )
    return path


def markdown_verdict(report: Report) -> str:
    """The verdict and the optima as Markdown (the dashboard note, the HTML report)."""
    lines = [
        f"## lrbatch: {report.study_name}",
        "",
        f"**Verdict.** {_verdict_text(report)}",
        "",
    ]
    if report.noise is not None:
        lines += [f"**Noise scale.** {report.theory()}", ""]
        lines += ["| point of the run | B_simple | 90% interval | trials |", "|---|---:|---:|---:|"]
        lines += [
            f"| {p.point} | {_scale(p.b_simple)} | {_scale(p.low)}–{_scale(p.high)} | {p.trials} |"
            for p in report.noise.points
        ]
        lines += [""]
    lines += [
        "| batch | optimal lr | 90% interval | " + report.metric + " | trials |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {o.batch_size} | {_lr(o.lr_opt)} | {_lr(o.lr_low)}–{_lr(o.lr_high)} "
        f"| {o.value_opt:.4g} | {o.trials} |"
        for o in report.optima
    ]
    batches = [o.batch_size for o in report.optima]
    lines += [
        "",
        f"Each rule from η0 = {_lr(report.base_lr)} at B0 = {report.base_batch}: "
        f"predicted/optimal lr (regret in {report.metric}).",
        "",
    ]
    lines += [
        "| batch | " + " | ".join(report.rules) + " |",
        "|---:|" + "---:|" * len(report.rules),
    ]
    for batch in batches:
        lines.append(f"| {batch} | " + " | ".join(_rule_cells(report, batch)) + " |")
    lines += ["", f"Generated by lrbatch {__version__} from {len(report.points)} trials."]
    return "\n".join(lines)


def report_html(report: Report, plotly_js: str = "inline", links: str = "") -> str:
    """The report as one HTML page: the verdict, the tables ``lrbatch report`` prints, then the
    figures, interactive.

    Args:
        report: the report.
        plotly_js: ``"inline"`` to embed plotly.js (a self-contained file), or the URL of a
            script that serves it.
        links: HTML put under the title (the dashboard's links to Optuna's own pages).
    """
    import html

    figures = [to_plotly(spec) for spec in report.figures()]
    body = [
        f"<h1>lrbatch report: {html.escape(report.study_name)}</h1>",
        links,
        f"<p id='verdict'><b>Verdict.</b> {html.escape(_verdict_text(report))}</p>",
        terminal_html(render(report)),  # the tables `lrbatch report` prints
    ]
    for i, figure in enumerate(figures):
        body.append(
            figure.to_html(full_html=False, include_plotlyjs=plotly_js if i == 0 else False)
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>lrbatch report</title></head>"
        "<body style='font-family:sans-serif;max-width:1000px;margin:auto'>"
        + "\n".join(body)
        + "</body></html>"
    )


def publish(report: Report, study: optuna.Study) -> None:
    """Save the figures and the verdict into the study for optuna-dashboard (replacing the last)."""
    from optuna_dashboard import save_note, save_plotly_graph_object

    for spec in report.figures():
        save_plotly_graph_object(study, to_plotly(spec), graph_object_id=f"lrbatch-{spec.key}")
    save_note(study, markdown_verdict(report))
