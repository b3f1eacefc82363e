"""Worker processes: one per GPU (or several per GPU), or N CPU workers sharing the cores.

Each worker runs ``lrbatch worker`` on the same study with its share of the CPU threads. The
study is the only thing they share: the plan is read from its trials, so workers never need to
talk to each other, and workers on other machines (``lrbatch worker --storage URL``) join the
same way.

A GPU worker is a new Python process, started with its device pinned before CUDA starts
(``CUDA_VISIBLE_DEVICES``). CPU workers are forked from a server process that has imported
torch and Lightning once (:mod:`multiprocessing`'s ``forkserver``, started in the background
while the sweep is being prepared): a worker then starts in milliseconds instead of the
seconds those imports take, which is most of a small sweep's time.

The pool watches its processes. A worker killed from outside (SIGKILL, the kernel's OOM
killer) has its running trial failed at once and is restarted; the failed trial's point is
retried first (:func:`lrbatch.sampler.next_step`). A worker whose trial raised an error stops
the pool, with the end of its log. Ctrl-C interrupts every worker (each fails its running
trial), waits a few seconds, and kills those still running.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from lrbatch.display import SweepProgress
from lrbatch.interrupts import Interrupts
from lrbatch.plan import Finished
from lrbatch.sampler import next_step

__all__ = [
    "STORAGE_ENV",
    "Slot",
    "WorkerFailed",
    "WorkerPool",
    "cpu_count",
    "start_worker_server",
    "visible_gpus",
    "worker_slots",
]

STORAGE_ENV = "LRBATCH_STORAGE"  # the storage URL reaches workers here, never on a command line
SLOT_ENV = "LRBATCH_WORKER_SLOT"
POOL_ENV = "LRBATCH_POOL_PID"  # the pool that started this worker: when it is gone, stop
_POOL_WATCH_S = 1.0  # how often a worker looks for its pool
_WATCH_S = 0.1  # how often the pool looks at its processes
_SHOW_S = 0.5  # how often it reads the study for the display
_STOP_S = 15.0  # after Ctrl-C, how long workers get to fail their trials before being killed
MAX_RESTARTS = 3  # restarts of one slot's worker after it was killed from outside
_LOCAL_DATASET = ("data_dir", "download")  # dataset settings that differ between machines
# What the worker server imports for its workers: torch, Lightning, Optuna's RDB storage (whose
# schema check imports alembic), MNIST-1D's generator.
_PRELOAD = [
    "lrbatch.cli",
    "lrbatch.sweep",
    "lrbatch.models",
    "optuna.storages._rdb.storage",
    "alembic.command",
    "alembic.context",
    "alembic.migration",
    "mnist1d.data",
]


class WorkerFailed(RuntimeError):
    """A worker process stopped with an error (its log's end is in the message)."""


@dataclass(frozen=True)
class Slot:
    """Where one worker process runs.

    Attributes:
        label: shown in the progress panel and recorded on its trials (``GPU 1``, ``cpu 2/4``).
        env: environment it is started with (``CUDA_VISIBLE_DEVICES`` for a GPU slot).
        threads: torch CPU threads it uses (None: torch's default, all cores).
    """

    label: str
    env: dict[str, str] = field(default_factory=dict)
    threads: int | None = None


def cpu_count() -> int:
    """Cores this process may run on (respects affinity masks, e.g. SLURM's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` entries."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_slots(
    hardware: DictConfig, cpus: int | None = None, gpus: Sequence[str] | None = None
) -> list[Slot]:
    """The worker processes ``hardware`` asks for on this machine.

    ``gpu`` (or ``auto`` with GPUs visible): ``workers_per_gpu`` per visible GPU. ``cpu``:
    ``workers`` processes, one torch thread each unless ``hardware.threads`` is set
    (:func:`lrbatch.train.make_fabric`); GPU workers share the cores out. A single slot trains
    in the calling process.

    Args:
        hardware: the ``hardware`` config section.
        cpus: cores available (default: :func:`cpu_count`).
        gpus: visible GPUs (default: :func:`visible_gpus`, asked only for ``gpu``/``auto``).
    """
    cpus = cpus or cpu_count()
    if hardware.accelerator in ("gpu", "auto"):
        gpus = list(gpus if gpus is not None else visible_gpus())
        if gpus:
            per_gpu = int(hardware.workers_per_gpu)
            count = len(gpus) * per_gpu
            threads = hardware.threads or max(1, cpus // count)
            return [
                Slot(
                    f"GPU {gpu}" + (f" #{k + 1}" if per_gpu > 1 else ""),
                    {"CUDA_VISIBLE_DEVICES": gpu},
                    threads if count > 1 else hardware.threads,
                )
                for gpu in gpus
                for k in range(per_gpu)
            ]
        if hardware.accelerator == "gpu":
            return [Slot("GPU")]  # none visible: the worker's own check says so
    count = int(hardware.workers)
    if count == 1:
        return [Slot("cpu", threads=hardware.threads)]
    return [Slot(f"cpu {k + 1}/{count}", threads=hardware.threads or 1) for k in range(count)]


def _overrides(cfg: DictConfig, slot: Slot) -> list[str]:
    """``key=value`` settings a worker process gets on top of the study's recorded config:
    this machine's hardware and local data settings, one worker per process."""
    values: dict[str, Any] = {f"hardware.{k}": v for k, v in cfg.hardware.items()}
    values.update({"hardware.workers": 1, "hardware.workers_per_gpu": 1})
    values["hardware.threads"] = slot.threads
    for key in ("heartbeat_interval", "grace_period"):
        values[f"study.{key}"] = cfg.study[key]
    for key in _LOCAL_DATASET:
        if key in cfg.dataset:
            values[f"dataset.{key}"] = cfg.dataset[key]
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


class _Child(Protocol):
    """What the pool needs of a worker process (a :class:`subprocess.Popen` has it)."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def send_signal(self, signal: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


def _server() -> Any:
    """The forkserver context CPU workers are forked from (None where there is none)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


def start_worker_server() -> Any:
    """Start the server CPU workers are forked from, if not running, without waiting for it:
    its imports then take place while this process prepares the sweep. Returns its context
    (None where there is none).

    The server starts with SIGINT ignored: a terminal's Ctrl-C reaches its whole process group
    and would otherwise break the server's imports (seconds of torch) with a traceback; the
    sweep, which receives it too, stops the workers in order. Workers handle it again."""
    server = _server()
    if server is not None:
        from multiprocessing import forkserver

        with _sigint_ignored_by_children():
            forkserver.ensure_running()
    return server


@contextlib.contextmanager
def _sigint_ignored_by_children() -> Iterator[None]:
    """Processes started inside ignore SIGINT (a disposition kept through exec), as does this
    one meanwhile: a Ctrl-C in the milliseconds a start takes is lost (a second one stops).
    (Blocking it instead would not do: a signal mask is per thread and not kept through exec.)"""
    if threading.current_thread() is not threading.main_thread():
        yield  # (only the main thread may change signal handlers)
        return
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)


def _forked_main(argv: list[str], env: dict[str, str], cwd: str, log: str) -> None:
    """A forked worker: the environment, directory and output of a new ``lrbatch`` process."""
    os.setsid()  # like start_new_session: Ctrl-C reaches the pool, which stops workers in order
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (Ctrl-C to this worker alone)
    with contextlib.suppress(OSError):  # its name in ps -o comm, top, pgrep (Linux)
        Path("/proc/self/comm").write_text("lrbatch-worker")
    stdin = os.open(os.devnull, os.O_RDONLY)  # (not the server's terminal)
    os.dup2(stdin, 0)
    os.close(stdin)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    handle = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for stream in (1, 2):
        os.dup2(handle, stream)
    os.close(handle)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    from lrbatch.cli import main

    sys.exit(main(argv))


class _Forked:
    """A forked worker (:class:`multiprocessing.Process`) seen as a :class:`subprocess.Popen`.

    Its exit status comes through the server it was forked from; should that server die, the
    status reads 255 while the worker may still run, so the pid itself is asked then."""

    def __init__(self, process: Any) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        return int(self._process.pid)

    def poll(self) -> int | None:
        code = self._process.exitcode
        if code is None or (code == 255 and _alive(self.pid)):
            return None
        return int(code)

    def send_signal(self, signal: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"worker pid {self.pid}", timeout or 0.0)
            self._process.join(0.05)
            if self._process.exitcode is not None:
                time.sleep(0.05)  # (its server is gone: the pid is asked again)
        return code

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def stop_with_pool() -> None:
    """In a worker a pool started: stop as on SIGTERM (its trial failed, to be retried) once the
    pool is gone, killed with SIGKILL say, so that no worker trains on unseen. Workers started
    by hand (``lrbatch worker``) have no pool and go on."""
    pool = os.environ.get(POOL_ENV, "")
    if not pool.isdigit():
        return

    def watch() -> None:
        while _alive(int(pool)):
            time.sleep(_POOL_WATCH_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="lrbatch-pool-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass
class _Process:
    slot: Slot
    index: int
    child: _Child
    log: Path
    restarts: int = 0


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class WorkerPool:
    """Starts and watches one worker process per slot on one study.

    Args:
        cfg: the sweep's config (its hardware and local data settings go to each worker).
        url: the study's storage URL (passed in the environment, never on a command line).
        slots: from :func:`worker_slots`.
        log_dir: where each worker's output goes (default: ``runs/<study>.workers/``).
    """

    def __init__(
        self, cfg: DictConfig, url: str, slots: Sequence[Slot], log_dir: Path | None = None
    ) -> None:
        self._cfg = cfg
        self._url = url
        self._slots = list(slots)
        self._log_dir = log_dir or Path("runs") / f"{cfg.study.name}.workers"
        self._host = socket.gethostname()
        self._processes: list[_Process] = []
        self._pids: set[int] = set()

    def run(self, worker: Any, progress: SweepProgress, trial_limit: int | None) -> tuple[str, int]:
        """Run the workers until each has stopped; show the study meanwhile.

        Args:
            worker: the :class:`lrbatch.sweep.Worker` of this process (its study and plan).
            progress: the live display.
            trial_limit: trials to train in all, shared out among the workers.

        Returns:
            Why the sweep stopped (``complete``, ``budget`` or ``paused``) and the number of
            trials the workers trained.

        Raises:
            WorkerFailed: a worker's trial raised an error, or every worker was killed.
            KeyboardInterrupt: after stopping every worker.
        """
        study = worker.study
        self._log_dir.mkdir(parents=True, exist_ok=True)
        shares = _shares(trial_limit, len(self._slots))
        try:
            # Ctrl-C lands while the pool sleeps; starting a worker or failing a trial, it waits
            # for that to be done (a worker started but not yet known would be left running).
            with Interrupts().installed() as interrupts:
                for index, slot in enumerate(self._slots):
                    if shares[index] != 0:
                        self._start(slot, index, shares[index])
                shown = -math.inf
                while any(p.child.poll() is None for p in self._processes):
                    interrupts.check()
                    if time.monotonic() - shown >= _SHOW_S:
                        progress.update(study.get_trials(deepcopy=False))
                        shown = time.monotonic()
                    self._watch(study, worker.plan, trial_limit)
                    with interrupts.allowed():
                        time.sleep(_WATCH_S)
                interrupts.check()
        except BaseException:
            self._stop(study)  # (a second Ctrl-C here lands at once)
            raise
        trials = study.get_trials(deepcopy=False)
        progress.update(trials)
        decision = next_step(worker.plan, trials)
        why = decision.why if isinstance(decision, Finished) else "paused"
        return why, self._trained(trials)

    def _start(self, slot: Slot, index: int, trial_limit: int | None) -> _Process:
        """Start a worker on ``slot`` and add it to those watched and stopped."""
        env = {**os.environ, **slot.env, STORAGE_ENV: self._url, SLOT_ENV: slot.label}
        env[POOL_ENV] = str(os.getpid())
        env["PYTHONUNBUFFERED"] = "1"
        argv = ["worker", "--study", self._cfg.study.name]
        if trial_limit is not None:
            argv += ["--trial-limit", str(trial_limit)]
        argv += _overrides(self._cfg, slot)
        log = self._log_dir / f"worker-{index + 1}.log"
        handle: IO[bytes]
        with log.open("ab") as handle:
            handle.write(f"--- {time.strftime('%F %T')} {slot.label}\n".encode())
        # (a GPU worker starts CUDA afresh; the server is started again should it have died)
        server = None if slot.env else start_worker_server()
        child: _Child
        if server is not None:
            process = server.Process(
                target=_forked_main, args=(argv, env, os.getcwd(), str(log)), daemon=False
            )
            process.start()
            child = _Forked(process)
        else:
            with log.open("ab") as handle:
                child = subprocess.Popen(
                    [sys.executable, "-m", "lrbatch", *argv],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches the pool, which stops workers
                )
        self._pids.add(child.pid)
        started = _Process(slot, index, child, log)
        self._processes.append(started)
        return started

    def _watch(self, study: Any, plan: Any, trial_limit: int | None) -> None:
        for process in list(self._processes):
            code = process.child.poll()
            if code is None or code == 0:
                continue
            self._processes.remove(process)
            if code in (1, 2):  # a trial's error (1) or bad input (2): stopping is the answer
                self._stop(study)
                kind = "bad input" if code == 2 else "an error"
                raise WorkerFailed(
                    f"worker {process.slot.label} (pid {process.child.pid}) stopped with {kind}; "
                    f"the end of its log {process.log}:\n{_tail(process.log)}"
                )
            # killed from outside: fail its trial now (not after the heartbeat grace period)
            failed = self._fail_trials_of(study, {process.child.pid})
            trials = study.get_trials(deepcopy=False)
            finished = isinstance(next_step(plan, trials), Finished)
            left = None if trial_limit is None else trial_limit - self._trained(trials)
            if finished or process.restarts >= MAX_RESTARTS or (left is not None and left <= 0):
                continue
            restarted = self._start(process.slot, process.index, left)
            restarted.restarts = process.restarts + 1
            with process.log.open("a") as log:
                log.write(
                    f"--- killed (exit {code}); failed trials {failed}; restarted as pid "
                    f"{restarted.child.pid}\n"
                )
        if not self._processes:
            trials = study.get_trials(deepcopy=False)
            left = None if trial_limit is None else trial_limit - self._trained(trials)
            if not isinstance(next_step(plan, trials), Finished) and (left is None or left > 0):
                raise WorkerFailed(
                    f"every worker was killed {MAX_RESTARTS + 1} times; "
                    f"see the logs in {self._log_dir}/"
                )

    def _stop(self, study: Any) -> None:
        """Interrupt every worker, give them :data:`_STOP_S` to fail their trials, kill the
        rest, and fail whatever trial of theirs still runs."""
        live = [p for p in self._processes if p.child.poll() is None]
        for process in live:  # (SIGTERM: a worker too new to handle it just ends, untouched)
            process.child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_S
        try:
            for process in live:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.child.wait(timeout=max(0.0, deadline - time.monotonic()))
        finally:  # (a second Ctrl-C while waiting: no worker is left behind either)
            for process in live:
                if process.child.poll() is None:
                    process.child.kill()
                    process.child.wait()
            self._fail_trials_of(study, self._pids)

    def _mine(self, trial: FrozenTrial, pids: set[int]) -> bool:
        worker = trial.user_attrs.get("worker") or {}
        return worker.get("host") == self._host and worker.get("pid") in pids

    def _fail_trials_of(self, study: Any, pids: set[int]) -> list[int]:
        failed = []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if self._mine(trial, pids):
                study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
                failed.append(trial.number)
        return failed

    def _trained(self, trials: Sequence[FrozenTrial]) -> int:
        return sum(t.state == TrialState.COMPLETE and self._mine(t, self._pids) for t in trials)


def _shares(trial_limit: int | None, workers: int) -> list[int | None]:
    """Each worker's part of ``trial_limit`` (None: no limit)."""
    if trial_limit is None:
        return [None] * workers
    return [trial_limit // workers + (k < trial_limit % workers) for k in range(workers)]
