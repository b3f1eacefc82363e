"""Ctrl-C while a worker trains, waits or records: stopped at once, never mid-record."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, TINY
from optuna.trial import TrialState

from lrbatch.config import load_config
from lrbatch.workers.interrupts import Interrupts
from lrbatch.workers.prepare import prepare
from lrbatch.workers.worker import work

SMOKE = ROOT / "sweeps" / "smoke.yaml"


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)  # (the handler runs at the next bytecode of the main thread)


def test_a_signal_outside_an_allowed_block_is_held_until_checked() -> None:
    with Interrupts().installed() as interrupts:
        ctrl_c()  # no KeyboardInterrupt here
        assert interrupts.pending
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
        assert not interrupts.pending
        interrupts.check()  # (raised once)


def test_a_signal_inside_an_allowed_block_lands_at_once() -> None:
    with Interrupts().installed() as interrupts:
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt), interrupts.allowed():
            threading.Timer(0.1, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
            time.sleep(30)  # (a long training step)
        assert time.monotonic() - started < 10


def test_a_held_signal_lands_on_entering_an_allowed_block() -> None:
    with Interrupts().installed() as interrupts:
        ctrl_c()
        entered = False
        with pytest.raises(KeyboardInterrupt), interrupts.allowed():
            entered = True
        assert not entered


def test_a_signal_a_second_after_a_held_one_lands_at_once() -> None:
    with Interrupts().installed(), pytest.raises(KeyboardInterrupt):
        ctrl_c()  # held
        time.sleep(1.1)  # (a write stuck that long)
        ctrl_c()  # must not leave the process unstoppable


def test_two_signals_together_are_held_as_one() -> None:
    """SLURM's SIGTERM to every process of a job and the pool's stop signal come together."""
    with Interrupts().installed() as interrupts:
        os.kill(os.getpid(), signal.SIGTERM)
        ctrl_c()
        assert interrupts.pending
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()


def test_a_signal_held_in_the_last_look_at_the_study_still_stops(
    worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan finished, but Ctrl-C came while that was being found out: say Interrupted, not
    complete (the user asked to stop; the report can wait for the next command)."""
    import lrbatch.workers.worker

    def finished(*args: Any) -> Any:
        ctrl_c()
        return lrbatch.workers.worker.Finished("complete")

    monkeypatch.setattr(lrbatch.workers.worker, "next_pack", finished)
    with pytest.raises(KeyboardInterrupt):
        work(worker)
    assert not worker.study.trials  # (and no trial was created only to be failed)


def test_sigterm_is_held_like_ctrl_c_and_the_handlers_come_back() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with Interrupts().installed() as interrupts:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert interrupts.pending
    assert {s: signal.getsignal(s) for s in before} == before


def test_outside_the_main_thread_nothing_is_taken_over() -> None:
    seen: list[Any] = []
    before = signal.getsignal(signal.SIGINT)  # (SIG_IGN in a job started in the background)

    def run() -> None:
        with Interrupts().installed():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [before]


@pytest.fixture
def worker(workdir: Path) -> Any:
    return prepare(load_config(SMOKE, [*TINY, "hardware.pack=1"]))  # one trial at a time


def test_ctrl_c_while_optuna_records_a_result_waits_for_the_record(
    worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted inside the study's tell (a half-written record: the trial left RUNNING with
    nobody to fail it): held back, the trial is recorded in full, then we stop."""
    tell = worker.study.tell

    def interrupted_tell(*args: Any, **kwargs: Any) -> Any:
        ctrl_c()
        return tell(*args, **kwargs)

    monkeypatch.setattr(worker.study, "tell", interrupted_tell)
    with pytest.raises(KeyboardInterrupt):
        work(worker)
    trials = worker.study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE]
    assert "micro_batch" in trials[0].user_attrs  # recorded in full


def test_ctrl_c_while_training_fails_the_trial_at_once(
    worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lrbatch.workers.worker

    def interrupted_train(*args: Any, **kwargs: Any) -> Any:
        ctrl_c()
        raise AssertionError("not interrupted")

    monkeypatch.setattr(lrbatch.workers.worker, "train_pack", interrupted_train)
    with pytest.raises(KeyboardInterrupt):
        work(worker)
    trials = worker.study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL]
    assert trials[0].user_attrs["worker"]["pid"] == os.getpid()  # whose it was


def test_ctrl_c_while_a_trial_is_asked_for_fails_it_before_training(
    worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between Optuna creating the trial and the objective: held, then the trial is failed as
    training begins, with the worker recorded (so a pool can tell whose it was)."""
    ask = worker.study.ask

    def interrupted_ask(*args: Any, **kwargs: Any) -> Any:
        trial = ask(*args, **kwargs)
        ctrl_c()
        return trial

    monkeypatch.setattr(worker.study, "ask", interrupted_ask)
    with pytest.raises(KeyboardInterrupt):
        work(worker)
    trials = worker.study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL]
    assert trials[0].user_attrs["worker"]["pid"] == os.getpid()
    assert "micro_batch" not in trials[0].user_attrs  # (it never trained)
