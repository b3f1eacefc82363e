"""A grid measured with another tool (or published in a paper) imported as an Optuna study,
with the same parameters and attributes as a sweep's, so that the same report runs on it."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Literal, NamedTuple

import optuna
from optuna.distributions import FloatDistribution, IntDistribution

from lrbatch.config import ConfigError
from lrbatch.search.storage import open_storage, redact
from lrbatch.search.study_io import is_diverged

__all__ = ["import_csv"]

_REQUIRED = ("batch_size", "lr", "metric")
_OPTIONAL = ("seed", "steps", "diverged", "reached_target")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


class _Row(NamedTuple):
    batch: int
    lr: float
    metric: float
    seed: int
    steps: int | None
    diverged: bool
    reached_target: bool | None


def _parse_row(row: dict[str, str], line: int, path: Path) -> _Row:
    def bad(column: str, accepted: str) -> ConfigError:
        return ConfigError(
            f"{path}:{line}: {column}={row.get(column)!r} is not accepted; {accepted}"
        )

    if None in row or None in row.values():  # (csv: more fields than the header, or fewer)
        raise ConfigError(
            f"{path}:{line}: the row's fields do not match the header's {len(row) - (None in row)}"
            " columns; accepted: one value per column (empty for none)"
        )
    try:
        batch = int(row["batch_size"])
        if batch <= 0:
            raise ValueError
    except ValueError:
        raise bad("batch_size", "a positive integer is needed") from None
    try:
        lr = float(row["lr"])
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError
    except ValueError:
        raise bad("lr", "a positive number is needed") from None
    said = (row.get("diverged") or "").strip().lower()
    if said and said not in _TRUE | _FALSE:
        raise bad("diverged", "true, false or empty (read from the metric) is needed")
    recorded = True if said in _TRUE else None
    reached = (row.get("reached_target") or "").strip().lower()
    if reached and reached not in _TRUE | _FALSE:
        raise bad("reached_target", "true, false or empty (no target) is needed")
    try:
        metric = float(row["metric"]) if (row["metric"] or "").strip() else math.nan
    except ValueError:
        raise bad("metric", "a number (or empty for a diverged run) is needed") from None
    try:
        seed = int(row.get("seed") or 0)
        steps = int(row["steps"]) if (row.get("steps") or "").strip() else None
    except ValueError:
        raise bad("seed/steps", "integers are needed") from None
    reached_target = None if not reached else reached in _TRUE
    if said in _FALSE and math.isnan(metric) and reached_target is not False:
        raise bad("metric", "a number: the row says it did not diverge (diverged=false)")
    diverged = is_diverged(recorded, metric, reached_target)
    return _Row(batch, lr, metric, seed, steps, diverged, reached_target)


def import_csv(
    path: Path,
    storage_url: str,
    study_name: str,
    direction: Literal["minimize", "maximize"] = "minimize",
) -> int:
    """Load a CSV grid (columns ``batch_size, lr, metric``; optional ``seed, steps, diverged,
    reached_target``) into a new study; returns the number of trials added. A row with an
    empty or infinite metric diverged, unless ``reached_target`` is false (a target budget's
    run that never reached it: worst at its lr, not a divergence). ``lrbatch report``'s
    ``trials.csv`` is accepted as it is (``value`` for ``metric``; only COMPLETE rows).

    Every row is checked before anything is written: a bad row adds nothing.

    Raises:
        ConfigError: a missing column or a bad value, naming the line.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not UTF-8 text"
        raise ConfigError(
            f"{path}: cannot be read ({reason}); accepted: a CSV file with columns "
            f"{', '.join(_REQUIRED)}"
        ) from None
    with io.StringIO(text, newline="") as file:
        reader = csv.DictReader(file)
        columns = set(reader.fieldnames or ())
        if "metric" not in columns and "value" in columns:  # lrbatch report's trials.csv
            reader.fieldnames = ["metric" if c == "value" else c for c in reader.fieldnames or ()]
            columns = set(reader.fieldnames)
        missing = [c for c in _REQUIRED if c not in columns]
        if missing:
            raise ConfigError(
                f"{path} lacks column(s) {', '.join(missing)}; needed: {', '.join(_REQUIRED)}, "
                f"optional: {', '.join(_OPTIONAL)}"
            )
        rows = [
            _parse_row(row, line, path)
            for line, row in enumerate(reader, start=2)
            if row.get("state", "COMPLETE") == "COMPLETE"  # trials.csv also lists failed ones
        ]
    if not rows:
        raise ConfigError(f"{path} has no rows")
    worst = math.inf if direction == "minimize" else -math.inf
    batches = [r.batch for r in rows]
    lrs = [r.lr for r in rows]
    seeds = [r.seed for r in rows]
    distributions = {
        "batch_size": IntDistribution(min(batches), max(batches), log=True),
        "lr": FloatDistribution(min(lrs), max(lrs), log=True),
        "seed": IntDistribution(min(seeds), max(seeds)),
    }
    storage = open_storage(storage_url, heartbeat_interval=None)
    existing = [s.study_name for s in optuna.get_all_study_summaries(storage, False)]
    if study_name in existing:  # importing twice would duplicate every row
        raise ConfigError(
            f"study {study_name!r} already exists in {redact(storage_url)}; import into a new study"
        )
    study = optuna.create_study(storage=storage, study_name=study_name, direction=direction)
    trials = []
    for batch, lr, metric, seed, steps, diverged, reached in rows:
        attrs = {"effective_batch": batch, "seed": seed, "diverged": diverged, "reason": "imported"}
        if steps is not None:
            attrs |= {"steps": steps, "samples": steps * batch}
        if reached is not None:
            attrs["reached_target"] = reached
        trials.append(
            optuna.trial.create_trial(
                params={"batch_size": batch, "lr": lr, "seed": seed},
                distributions=distributions,
                value=worst if diverged or reached is False else metric,
                user_attrs=attrs,
            )
        )
    study.add_trials(trials)
    study.set_user_attr("lrbatch.imported_from", str(path))
    return len(trials)
