"""Shared fixtures: every test that writes runs/ works in its own temporary directory."""

import os
from pathlib import Path

import pytest
from pg import fresh_postgres_url, make_postgres_database, postgres_url  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))

# Tiny settings that make any trial take well under a second on CPU.
TINY = [
    "budget.epochs=0.5",
    "budget.steps=20",
    "budget.max_epochs=0.5",
    "budget.eval_every_epochs=0.25",
    "hardware.accelerator=cpu",
    "hardware.precision=32",
]


@pytest.fixture(scope="session", autouse=True)
def dataset_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated datasets are cached for this test session only (worker processes too)."""
    cache = tmp_path_factory.mktemp("cache")
    os.environ["LRBATCH_CACHE"] = str(cache)
    return cache


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Run the test inside a fresh directory (runs/ and data/ land there)."""
    previous = Path.cwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(previous)
