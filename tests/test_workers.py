"""Several workers on one study: CPU worker processes, killed workers, Ctrl-C, contention.

Every test runs real ``lrbatch`` processes training real models on a real SQLite study.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy.exc
import torch
from conftest import ROOT, TINY
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from sqlalchemy.engine import make_url

from lrbatch.config import load_config
from lrbatch.search.plan import Finished, SweepPlan
from lrbatch.search.sampler import next_step, observations
from lrbatch.search.storage import open_storage
from lrbatch.training.loop import make_fabric
from lrbatch.workers.pool import alive as _alive
from lrbatch.workers.slots import cpu_workers, worker_slots
from lrbatch.workers.sweep import run_sweep
from lrbatch.workers.worker import STORAGE_ENV

SMOKE = ROOT / "sweeps" / "smoke.yaml"
# Trials of about a second on 2 cores: long enough to be killed or interrupted mid-trial.
# (one trial at a time: hardware.pack=auto's timing may choose other packs in a rerun)
SLOW_TRIALS = [
    "hardware.pack=1",
    "budget.epochs=40",
    "study.heartbeat_interval=1",
    "study.grace_period=10",
]
# Trials long enough that two workers started together both get some (the smoke sweep's own
# trials take ~50 ms: the first worker up could train them all).
SHARED = ["budget.epochs=40"]
# One worker process, the sweep's own (the default is one per core): a joined `lrbatch worker`
# takes the study's recorded hardware.workers too, so it trains in its own process as well.
ONE = "hardware.workers=1"
_STARTED: list[subprocess.Popen[str]] = []  # lrbatch processes a test started


def load(name: str = "smoke") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///runs/{name}.db")


def key(trial: FrozenTrial) -> tuple[int, float, int]:
    return (trial.params["batch_size"], round(trial.params["lr"], 9), trial.params["seed"])


def assert_no_point_trained_twice(study: optuna.Study) -> list[FrozenTrial]:
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    repeated = [p for p, n in Counter(key(t) for t in complete).items() if n > 1]
    assert not repeated, f"points trained twice: {repeated}"
    return complete


def assert_every_trial_complete(study: optuna.Study) -> None:
    """No trial failed, is left running or was skipped: workers on one machine take turns to
    plan, so none chose a point another had just taken (before, eight workers on a smoke sweep
    skipped 22 of 39 trials so, pruned with reason "skipped: another worker took this point")."""
    states = {t.number: t.state for t in study.trials if t.state != TrialState.COMPLETE}
    assert not states, states


def assert_plan_complete(study: optuna.Study, overrides: list[str]) -> None:
    cfg = load_config(SMOKE, overrides)
    plan = SweepPlan.from_config(cfg.sweep)
    assert next_step(plan, study.get_trials()) == Finished("complete")


def lrbatch(*args: str, new_session: bool = False) -> subprocess.Popen[str]:
    """Start the ``lrbatch`` command in the current directory (killed, with every process it
    started, when the test ends)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lrbatch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        start_new_session=new_session,
    )
    _STARTED.append(process)
    return process


def _status(pid: int | str) -> dict[str, str]:
    """The fields of ``/proc/<pid>/status`` (``PPid``, ``State``, ``SigIgn``...)."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines)


def _parents() -> dict[int, int]:
    """pid -> parent pid, for every process."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            found[int(proc.name)] = int(_status(proc.name)["PPid"])
    return found


def _descendants(pid: int) -> set[int]:
    parents = _parents()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    """A failed test leaves no process behind (a frozen or busy worker would slow the tests
    after it): every process a test started, and theirs (forked workers included), is killed."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        for pid in (_descendants(process.pid) | {process.pid}) if process.poll() is None else ():
            for number in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, number)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=10)


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = condition()
        except (KeyError, optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError):
            found = None  # the study is being created
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def study_exists(name: str = "smoke") -> bool:
    """The sweep has created study ``name`` (read-only: loading it earlier could race the
    sweep creating the database's tables)."""
    path = Path(f"runs/{name}.db")
    if not path.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            query = "SELECT count(*) FROM studies WHERE study_name = ?"
            return bool(db.execute(query, (name,)).fetchone()[0])
    except sqlite3.Error:
        return False


def running_trial_of_a_worker(
    study_name: str = "smoke", pid: int | None = None
) -> FrozenTrial | None:
    """A trial some worker (the process ``pid``, if given) is training, once at least two
    trials have finished."""
    if not study_exists(study_name):
        return None
    trials = load(study_name).get_trials()
    if sum(t.state == TrialState.COMPLETE for t in trials) < 2:
        return None
    running = [t for t in trials if t.state == TrialState.RUNNING and "reason" in t.user_attrs]
    running = [t for t in running if pid is None or t.user_attrs["worker"]["pid"] == pid]
    return running[0] if running else None


def stopped_mid_trial(pid: int, timeout: float = 120) -> FrozenTrial:
    """Freeze process ``pid`` (SIGSTOP) while it trains a trial and return that trial.

    A trial seen running may finish before a signal sent after the look lands; frozen, the
    process cannot finish it, so the caller's SIGKILL or SIGINT (then SIGCONT) hits that trial.
    Its result not recorded yet (``micro_batch``, the first thing written after training), it
    is still training, or about to: where a Ctrl-C lands at once.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: _state(pid) in "Tt", 10, f"pid {pid} to stop")  # (kill() returns first)
        try:
            running = [
                t
                for t in load().get_trials(states=(TrialState.RUNNING,))
                if t.user_attrs.get("worker", {}).get("pid") == pid
                and not str(t.user_attrs.get("reason", "explore")).startswith("explore")
                and "micro_batch" not in t.user_attrs
            ]
        except BaseException:
            os.kill(pid, signal.SIGCONT)
            raise
        if running:
            return running[0]
        os.kill(pid, signal.SIGCONT)  # (between trials: let it start the next one)
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for pid {pid} to be mid-trial")


def _state(pid: int) -> str:
    """The process's state letter (``T``: stopped), as ``ps`` shows it."""
    return _status(pid)["State"][0]


# -- where workers run --------------------------------------------------------------------------


def test_cpu_workers_train_with_one_thread_each_unless_told() -> None:
    # (torch's default threads spin while they wait: ×4–10 slower beside another torch job)
    hardware = OmegaConf.create(
        {"accelerator": "cpu", "workers": 4, "workers_per_gpu": 1, "threads": None}
    )
    slots = worker_slots(hardware, cpus=8)
    assert [s.label for s in slots] == ["cpu 1/4", "cpu 2/4", "cpu 3/4", "cpu 4/4"]
    assert {s.threads for s in slots} == {1} and all(not s.env for s in slots)
    before = torch.get_num_threads()
    try:
        make_fabric(OmegaConf.create({"accelerator": "cpu", "precision": "32", "threads": None}))
        assert torch.get_num_threads() == 1  # one worker, in-process: one thread too
    finally:
        torch.set_num_threads(before)
    hardware.threads = 3
    assert {s.threads for s in worker_slots(hardware, cpus=8)} == {3}
    hardware.workers = 1
    assert worker_slots(hardware, cpus=8)[0].threads == 3  # one worker: trains in-process


def test_auto_cpu_workers_are_one_per_core_up_to_eight() -> None:
    # (the default: two workers finish the default sweep ×1.6 sooner on 2 cores than one, and
    # stay within ×1.5 of their idle time beside a busy neighbour; docs/benchmarks.md)
    hardware = OmegaConf.create(
        {"accelerator": "cpu", "workers": "auto", "workers_per_gpu": 1, "threads": None}
    )
    assert load_config().hardware.workers == "auto"
    assert [cpu_workers(hardware, cpus) for cpus in (1, 2, 3, 8, 64)] == [1, 2, 3, 8, 8]
    slots = worker_slots(hardware, cpus=2)
    assert [(s.label, s.threads) for s in slots] == [("cpu 1/2", 1), ("cpu 2/2", 1)]
    assert [(s.label, s.threads) for s in worker_slots(hardware, cpus=1)] == [("cpu", None)]
    hardware.threads = 4  # a worker per 4 cores, each with 4 threads
    assert [cpu_workers(hardware, cpus) for cpus in (2, 4, 9, 64)] == [1, 1, 2, 8]
    assert {s.threads for s in worker_slots(hardware, cpus=9)} == {4}
    hardware.workers = 3  # a number is taken as given, whatever the cores
    assert cpu_workers(hardware, 64) == 3 and cpu_workers(hardware, 1) == 3


def test_one_worker_per_gpu_pinned_before_cuda_starts() -> None:
    hardware = OmegaConf.create(
        {"accelerator": "gpu", "workers": 1, "workers_per_gpu": 1, "threads": None}
    )
    slots = worker_slots(hardware, cpus=16, gpus=["0", "3"])
    assert [(s.label, s.env, s.threads) for s in slots] == [
        ("GPU 0", {"CUDA_VISIBLE_DEVICES": "0"}, 8),
        ("GPU 3", {"CUDA_VISIBLE_DEVICES": "3"}, 8),
    ]
    hardware.workers_per_gpu = 2
    slots = worker_slots(hardware, cpus=16, gpus=["0", "3"])
    assert [s.label for s in slots] == ["GPU 0 #1", "GPU 0 #2", "GPU 3 #1", "GPU 3 #2"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "0", "3", "3"]
    assert {s.threads for s in slots} == {4}
    # No GPU visible: one slot, whose own check says what is wrong.
    assert [s.label for s in worker_slots(hardware, cpus=16, gpus=[])] == ["GPU"]


# -- several workers ----------------------------------------------------------------------------


def test_two_cpu_workers_finish_the_plan_without_repeating_a_point(workdir: Path) -> None:
    overrides = ["hardware.workers=2", *SHARED]
    outcome = run_sweep(load_config(SMOKE, overrides))
    assert outcome.why == "complete" and outcome.workers == 2

    study = load()
    complete = assert_no_point_trained_twice(study)
    assert outcome.trials_run == len(complete) > 5
    assert_every_trial_complete(study)
    pids = {t.user_attrs["worker"]["pid"] for t in complete}
    assert len(pids) == 2 and os.getpid() not in pids  # trained by the two worker processes
    assert {t.user_attrs["worker"]["slot"] for t in complete} == {"cpu 1/2", "cpu 2/2"}
    assert_plan_complete(study, overrides)


@pytest.mark.slow
def test_eight_workers_on_one_sqlite_study(workdir: Path) -> None:
    # Tiny trials: eight processes write to one SQLite file all the time.
    overrides = [
        *TINY,
        "hardware.workers=8",
        "sweep.batch_sizes=[32,64,128,256]",
        "sweep.seeds=3",
        "sweep.max_trials=200",
    ]
    outcome = run_sweep(load_config(SMOKE, overrides))
    assert outcome.why == "complete"

    study = load()
    complete = assert_no_point_trained_twice(study)
    assert_every_trial_complete(study)
    assert outcome.trials_run == len(complete)
    assert_plan_complete(study, overrides)
    logs = "".join(p.read_text() for p in Path("runs/smoke.workers").glob("*.log"))
    assert "database is locked" not in logs and "Traceback" not in logs


def test_samplers_in_many_processes_never_propose_one_point_twice(workdir: Path) -> None:
    """The sampler alone, no training: eight processes asking as fast as they can."""
    storage = "sqlite:///runs/hammer.db"
    optuna.create_study(study_name="hammer", storage=open_storage(storage))  # makes runs/
    context = __import__("multiprocessing").get_context("spawn")
    with context.Pool(8) as pool:
        pool.starmap(_hammer, [(storage, k) for k in range(8)])
    study = optuna.load_study(study_name="hammer", storage=storage)
    assert_no_point_trained_twice(study)
    plan = _hammer_plan()
    assert isinstance(next_step(plan, study.get_trials()), Finished)
    for batch, state in plan.states(observations(study.get_trials())).items():
        assert 1 / 1.3 <= state.best_lr / (0.01 * math.sqrt(batch / 16)) <= 1.3


def _hammer_plan() -> SweepPlan:
    return SweepPlan(
        batch_sizes=(16, 32, 64, 128), base_batch=16, lr_min=1e-4, lr_max=1.0, base_lr=0.05,
        seeds=3, tolerance=1.3, max_trials=400,
    )  # fmt: skip


def _hammer(storage: str, worker: int) -> None:
    from lrbatch.search.sampler import LRBatchSampler, stop_when_plan_finished

    plan = _hammer_plan()
    study = optuna.load_study(
        study_name="hammer", storage=open_storage(storage), sampler=LRBatchSampler(plan)
    )

    def objective(trial: optuna.Trial) -> float:
        batch = trial.suggest_int("batch_size", 16, 128, log=True)
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        seed = trial.suggest_int("seed", 0, 2)
        if trial.user_attrs.get("reason") == "explore":
            raise optuna.TrialPruned()
        time.sleep(0.01 * (worker % 3))
        return math.log(lr / (0.01 * math.sqrt(batch / 16))) ** 2 + 0.01 * seed

    study.optimize(objective, n_trials=200, callbacks=[stop_when_plan_finished])


def test_two_workers_against_postgres_finish_the_smoke_sweep_without_showing_the_password(
    workdir: Path, fresh_postgres_url: str
) -> None:
    """Distributed mode: the study in a real PostgreSQL server, reached with a password; the
    sweep's output, its workers' logs, their command lines and the study's recorded config
    never show it."""
    password = str(make_url(fresh_postgres_url).password)
    sweep = lrbatch(
        "sweep", str(SMOKE), "hardware.workers=2", *SHARED, f"study.storage={fresh_postgres_url}"
    )
    typed = " ".join(sweep.args)  # type: ignore[arg-type]
    command_lines: dict[int, str] = {}  # every process the sweep starts: pid -> cmdline

    def watch() -> None:
        while sweep.poll() is None:
            for child in Path("/proc").glob("[0-9]*/cmdline"):
                with contextlib.suppress(OSError, ValueError):
                    line = child.read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    if line.strip() not in ("", typed):  # (a child shows its parent's
                        # command line until it execs; an exited one shows none)
                        command_lines[int(child.parent.name)] = line
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    output, _ = sweep.communicate(timeout=300)
    watcher.join(timeout=10)
    assert sweep.returncode == 0 and "Sweep complete" in output, output

    study = optuna.load_study(study_name="smoke", storage=fresh_postgres_url)
    complete = assert_no_point_trained_twice(study)
    assert_every_trial_complete(study)
    assert_plan_complete(study, [])
    workers = {t.user_attrs["worker"]["pid"] for t in complete}
    assert len(workers) == 2 and workers <= command_lines.keys()  # (their command lines seen)
    assert all("forkserver" in command_lines[pid] for pid in workers)  # forked, quick to start
    logs = "".join(p.read_text() for p in Path("runs/smoke.workers").glob("*.log"))
    recorded = json.dumps(study.user_attrs["lrbatch.config"])
    command_lines.pop(sweep.pid, None)  # (the command typed, password included, as chosen)
    for text in (output, logs, recorded, *command_lines.values()):
        assert password not in text
    assert "lrbatch:***@127.0.0.1" in output


def test_a_sqlite_study_moved_to_postgres_is_finished_by_workers_on_two_machines(
    workdir: Path, fresh_postgres_url: str
) -> None:
    """The README's recipe: begin in SQLite, copy the study to PostgreSQL, and finish it there
    with `lrbatch worker`s started elsewhere (here: two shells), the URL in $LRBATCH_STORAGE."""
    cfg = load_config(SMOKE, [*SHARED, ONE])
    begun = run_sweep(cfg, Console(file=io.StringIO()), trial_limit=4)
    assert begun.why == "paused" and begun.trials_run == 4
    optuna.copy_study(
        from_study_name="smoke",
        from_storage="sqlite:///runs/smoke.db",
        to_storage=fresh_postgres_url,
    )

    env = {**os.environ, STORAGE_ENV: fresh_postgres_url}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "lrbatch", "worker", "--study", "smoke"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]

    assert [w.returncode for w in workers] == [0, 0], outputs
    assert all("Sweep complete" in output for output in outputs), outputs
    password = str(make_url(fresh_postgres_url).password)
    assert not any(password in output for output in outputs)
    study = optuna.load_study(study_name="smoke", storage=fresh_postgres_url)
    complete = assert_no_point_trained_twice(study)
    assert_every_trial_complete(study)
    assert_plan_complete(study, [])
    moved = [t for t in complete if t.user_attrs["worker"]["pid"] == os.getpid()]
    assert len(moved) == 4  # the SQLite trials came along, attributes and all
    assert {t.user_attrs["worker"]["pid"] for t in complete} - {os.getpid()} == {
        w.pid for w in workers
    }


# -- faults -------------------------------------------------------------------------------------


def retries_of(study: optuna.Study, number: int) -> list[FrozenTrial]:
    prefix = f"retry of #{number}:"
    return [t for t in study.trials if str(t.user_attrs.get("reason", "")).startswith(prefix)]


def assert_killed_trial_failed_and_retried(
    study: optuna.Study, victim: FrozenTrial, overrides: list[str] = SLOW_TRIALS
) -> list[FrozenTrial]:
    """The victim's trial failed, and with it any trial of its pack: the dead worker's, at the
    victim's batch size and seed; each retried once; returns the failed trials."""
    killed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert victim.number in [t.number for t in killed]
    pid, where = (
        victim.user_attrs["worker"]["pid"],
        (victim.params["batch_size"], victim.params["seed"]),
    )
    for trial in killed:
        assert trial.user_attrs["worker"]["pid"] == pid
        assert (trial.params["batch_size"], trial.params["seed"]) == where
        retried = retries_of(study, trial.number)
        assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
        assert retried[0].params == trial.params  # the same point, trained again
    intact = [t for t in study.trials if t.state != TrialState.FAIL]
    assert all(t.state == TrialState.COMPLETE for t in intact)
    assert_no_point_trained_twice(study)
    assert_plan_complete(study, overrides)
    return killed


def running_trials_of(pid: int) -> list[int]:
    return sorted(
        t.number
        for t in load().get_trials(states=(TrialState.RUNNING,))
        if t.user_attrs.get("worker", {}).get("pid") == pid
    )


@pytest.mark.slow
@pytest.mark.parametrize("pack", ["1", "4"])
def test_sigkilled_worker_process_is_replaced_and_its_trial_retried(
    workdir: Path, pack: str
) -> None:
    """Killed mid-trial, alone or holding a pack of four: every trial it held failed and is
    retried once, and the pool's log names them all."""
    overrides = [*SLOW_TRIALS[1:], f"hardware.pack={pack}"]
    sweep = lrbatch("sweep", str(SMOKE), "hardware.workers=2", *overrides)

    def running_in_a_pack() -> FrozenTrial | None:  # (pack 1: any running trial)
        found = running_trial_of_a_worker()
        if found and (pack == "1" or len(running_trials_of(found.user_attrs["worker"]["pid"])) > 1):
            return found
        return None

    running = wait_for(running_in_a_pack, 120, f"a running trial (pack {pack})")
    assert isinstance(running, FrozenTrial)
    pid = running.user_attrs["worker"]["pid"]
    assert pid != sweep.pid  # a worker process, not the pool
    victim = stopped_mid_trial(pid)
    held = running_trials_of(pid)  # frozen: what the worker holds when it dies
    assert (len(held) == 1) == (pack == "1"), held
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "lrbatch-worker"  # (ps, pgrep)
    os.kill(pid, signal.SIGKILL)
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, output
    assert "Sweep complete" in output
    killed = assert_killed_trial_failed_and_retried(load(), victim, overrides)
    assert sorted(t.number for t in killed) == held
    logs = "".join(p.read_text() for p in Path("runs/smoke.workers").glob("*.log"))
    assert f"failed trials {held}; restarted as pid" in logs


@pytest.mark.slow
def test_a_silent_worker_elsewhere_is_failed_after_the_grace_period(workdir: Path) -> None:
    """A `lrbatch worker` that joined from another shell dies; no pool watches it: the other
    worker fails its trial once its heartbeat is older than study.grace_period, and retries."""
    sweep = lrbatch("sweep", str(SMOKE), *SLOW_TRIALS[:-1], "study.grace_period=3", ONE)
    wait_for(lambda: study_exists() and load().trials, 60, "the study")
    joined = lrbatch("worker", "--storage", "sqlite:///runs/smoke.db", "--study", "smoke")

    # (any of its trials: the sweep's own, running beside it, may have the lower number)
    wait_for(lambda: running_trial_of_a_worker(pid=joined.pid), 120, "a trial of the joined worker")
    victim = stopped_mid_trial(joined.pid)
    joined.kill()
    joined.communicate()
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, output
    assert_killed_trial_failed_and_retried(load(), victim)


# -- Ctrl-C -------------------------------------------------------------------------------------


def interrupt(process: subprocess.Popen[str], frozen: int | None = None) -> tuple[str, float]:
    """Send SIGINT as Ctrl-C does, then wake the ``frozen`` process (see ``stopped_mid_trial``);
    return the output and the seconds it took to stop."""
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    if frozen is not None:
        os.kill(frozen, signal.SIGCONT)
    output, _ = process.communicate(timeout=60)
    return output, time.monotonic() - started


@pytest.mark.slow
def test_ctrl_c_then_rerun_trains_the_same_points_as_one_uninterrupted_run(
    workdir: Path,
) -> None:
    sweep = lrbatch("sweep", str(SMOKE), *SLOW_TRIALS, ONE)
    wait_for(running_trial_of_a_worker, 120, "a running trial")
    victim = stopped_mid_trial(sweep.pid)  # (one worker: the sweep trains in its own process)
    output, took = interrupt(sweep, frozen=sweep.pid)
    assert sweep.returncode == 130 and "Interrupted" in output, output
    assert took < 10, f"took {took:.1f}s to stop"
    study = load()
    assert study.trials[victim.number].state == TrialState.FAIL
    assert not study.get_trials(states=(TrialState.RUNNING,))

    resumed = lrbatch("sweep", str(SMOKE), *SLOW_TRIALS, ONE)
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and "Sweep complete" in output, output
    run_sweep(load_config(SMOKE, [*SLOW_TRIALS, ONE, "study.name=straight"]))
    interrupted = {key(t) for t in load().get_trials(states=(TrialState.COMPLETE,))}
    straight = {key(t) for t in load("straight").get_trials(states=(TrialState.COMPLETE,))}
    assert interrupted == straight
    assert retries_of(load(), victim.number)


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_and_the_same_command_resumes(workdir: Path) -> None:
    command = ("sweep", str(SMOKE), "hardware.workers=2", *SLOW_TRIALS)
    sweep = lrbatch(*command)
    running = wait_for(running_trial_of_a_worker, 120, "a running trial")
    assert isinstance(running, FrozenTrial)
    frozen = running.user_attrs["worker"]["pid"]
    stopped_mid_trial(frozen)  # (so at least this trial is running at Ctrl-C)
    output, took = interrupt(sweep, frozen=frozen)
    assert sweep.returncode == 130 and "Interrupted" in output, output
    assert took < 30, f"took {took:.1f}s to stop"  # (a worker stuck in a write: killed at 15)
    study = load()
    assert not study.get_trials(states=(TrialState.RUNNING,))
    interrupted = study.get_trials(states=(TrialState.FAIL,))
    assert interrupted  # the trials running at Ctrl-C are failed, to be retried

    resumed = lrbatch(*command)
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and "Sweep complete" in output, output
    study = load()
    assert_no_point_trained_twice(study)
    assert_plan_complete(study, SLOW_TRIALS)
    for trial in interrupted:
        if trial.params:  # (one interrupted while its sampler chose has no point to retry)
            assert any(t.state == TrialState.COMPLETE for t in retries_of(study, trial.number))


def test_ctrl_c_while_the_worker_server_imports_stops_cleanly(workdir: Path) -> None:
    """Ctrl-C from a terminal reaches its whole foreground process group; the server workers are
    forked from imports torch for seconds after the sweep starts it, and must not be hit then."""
    sweep = lrbatch("sweep", str(SMOKE), "hardware.workers=2", new_session=True)  # (a job)

    def server() -> int | None:
        children = [p for p, parent in _parents().items() if parent == sweep.pid]
        found = [p for p in children if b"forkserver" in Path(f"/proc/{p}/cmdline").read_bytes()]
        return found[0] if found else None

    def handles_sigint(pid: int) -> bool:  # (the sweep ignores it while it starts the server)
        return not int(_status(pid)["SigIgn"], 16) & 1 << (signal.SIGINT - 1)

    pid = wait_for(server, 60, "the worker server")
    assert isinstance(pid, int)
    wait_for(lambda: handles_sigint(sweep.pid), 10, "the sweep to handle Ctrl-C again")
    os.killpg(sweep.pid, signal.SIGINT)  # what Ctrl-C does
    output, _ = sweep.communicate(timeout=60)
    assert sweep.returncode == 130 and "Interrupted" in output, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    wait_for(lambda: not _alive(pid), 60, "the worker server to exit with the sweep")


def test_the_worker_server_is_started_ignoring_ctrl_c() -> None:
    from lrbatch.workers.pool import sigint_ignored_by_children as _sigint_ignored_by_children

    show = "import signal; print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)"
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (as in a terminal, not a job)
    with _sigint_ignored_by_children():
        child = subprocess.run([sys.executable, "-c", show], capture_output=True, text=True)
    assert child.stdout.strip() == "True"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # (ours is back)


def test_ctrl_c_while_the_pool_starts_a_worker_leaves_none_running(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C right as the first worker is started (while the pool waits for the fork server,
    say): the sweep stops, and that worker with it, not left to run the sweep unseen."""
    from lrbatch.workers.pool import ProcessPool

    start = ProcessPool.start
    started: list[int] = []

    def interrupted_start(pool: ProcessPool, *args: Any, **kwargs: Any) -> Any:
        member = start(pool, *args, **kwargs)
        started.append(member.child.pid)
        if len(started) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return member

    monkeypatch.setattr(ProcessPool, "start", interrupted_start)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(load_config(SMOKE, ["hardware.workers=2", *SHARED]), Console(file=io.StringIO()))
    assert started
    wait_for(lambda: not any(_alive(pid) for pid in started), 30, "every worker to stop")
    trials = load().get_trials()
    time.sleep(1)
    assert load().get_trials() == trials  # nothing trains on
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) < 5, "a worker went on with the sweep"  # (all of it: 17 and more)


@pytest.mark.slow
def test_workers_stop_when_their_pool_is_killed(workdir: Path) -> None:
    """SIGKILL to the sweep (no chance to stop its workers): they notice within seconds, fail
    their trials and stop, rather than train on unseen; the same command then resumes."""
    sweep = lrbatch("sweep", str(SMOKE), "hardware.workers=2", *SLOW_TRIALS)
    wait_for(running_trial_of_a_worker, 120, "a running trial")
    workers = {
        pid
        for pid in _descendants(sweep.pid)
        if Path(f"/proc/{pid}/comm").read_text().strip() == "lrbatch-worker"
    }
    assert len(workers) == 2
    sweep.kill()
    sweep.communicate()
    wait_for(lambda: not any(_alive(pid) for pid in workers), 30, "the workers to stop")
    study = load()
    assert not study.get_trials(states=(TrialState.RUNNING,))
    logs = "".join(p.read_text() for p in Path("runs/smoke.workers").glob("*.log"))
    assert logs.count("Interrupted.") == 2

    resumed = lrbatch("sweep", str(SMOKE), "hardware.workers=2", *SLOW_TRIALS)
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and "Sweep complete" in output, output
    assert_no_point_trained_twice(load())
