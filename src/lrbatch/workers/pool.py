"""A pool of processes, each running one function of a module with its own arguments.

The pool knows nothing of studies or training: it is handed an entry point
(``"package.module:function"``, called with an argument list and returning an exit status),
and for each process a label, its arguments, its environment and whether it may be forked.

A forked process comes from a server process that has imported the entry's heavy modules once
(:mod:`multiprocessing`'s ``forkserver``, started in the background): it starts in
milliseconds instead of the seconds torch and Lightning take to import. A process that must
start afresh (one pinned to a GPU before CUDA starts) is a new Python interpreter.

Processes start in sessions of their own: a terminal's Ctrl-C reaches the pool, which stops
them in order (:meth:`ProcessPool.stop`). A process started by a pool stops by itself when the
pool is gone (:func:`stop_with_parent`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "POOL_ENV",
    "Exited",
    "Member",
    "ProcessPool",
    "alive",
    "start_server",
    "stop_with_parent",
    "tail",
]

POOL_ENV = "LRBATCH_POOL_PID"  # the pool that started a process: when it is gone, stop
_POOL_WATCH_S = 1.0  # how often a process looks for its pool


class _Child(Protocol):
    """What the pool needs of a process (a :class:`subprocess.Popen` has it)."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def send_signal(self, signal: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


@dataclass
class Member:
    """One process of the pool.

    Attributes:
        label: what it is called in messages (``cpu 2/4``, ``GPU 1``).
        index: its place among the pool's processes (restarts keep it).
        child: the process.
        log: where its output goes.
        restarts: times a process in this place was started again.
    """

    label: str
    index: int
    child: _Child
    log: Path
    restarts: int = 0


@dataclass(frozen=True)
class Exited:
    """A member that ended, with its exit status (negative: killed by that signal)."""

    member: Member
    code: int


def _server(preload: Sequence[str]) -> Any:
    """The forkserver context processes are forked from (None where there is none)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    return context


def start_server(preload: Sequence[str]) -> Any:
    """Start the server processes are forked from, if not running, without waiting for it:
    its imports of ``preload`` then take place while the caller goes on. Returns its context
    (None where there is none).

    The server starts with SIGINT ignored: a terminal's Ctrl-C reaches its whole process group
    and would otherwise break the server's imports (seconds of torch) with a traceback; the
    pool, which receives it too, stops its processes in order. Forked processes handle it."""
    server = _server(preload)
    if server is not None:
        from multiprocessing import forkserver

        with sigint_ignored_by_children():
            forkserver.ensure_running()
    return server


@contextlib.contextmanager
def sigint_ignored_by_children() -> Iterator[None]:
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


def _call(entry: str, argv: list[str]) -> int:
    module, function = entry.split(":")
    return int(getattr(import_module(module), function)(argv))


def _forked_main(
    entry: str, argv: list[str], env: dict[str, str], cwd: str, log: str, name: str
) -> None:
    """A forked process: the environment, directory, name and output of a new process."""
    os.setsid()  # like start_new_session: Ctrl-C reaches the pool, which stops its processes
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (Ctrl-C to this one alone)
    with contextlib.suppress(OSError):  # its name in ps -o comm, top, pgrep (Linux)
        Path("/proc/self/comm").write_text(name)
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
    sys.exit(_call(entry, argv))


class _Forked:
    """A forked process (:class:`multiprocessing.Process`) seen as a :class:`subprocess.Popen`.

    Its exit status comes through the server it was forked from; should that server die, the
    status reads 255 while the process may still run, so the pid itself is asked then."""

    def __init__(self, process: Any) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        return int(self._process.pid)

    def poll(self) -> int | None:
        code = self._process.exitcode
        if code is None or (code == 255 and alive(self.pid)):
            return None
        return int(code)

    def send_signal(self, signal: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            self._process.join(0.05)
            if self._process.exitcode is not None:
                time.sleep(0.05)  # (its server is gone: the pid is asked again)
        return code

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def stop_with_parent() -> None:
    """In a process a pool started: stop as on SIGTERM once the pool is gone (killed with
    SIGKILL, say), so that nothing goes on unseen. A process started by hand has no pool."""
    pool = os.environ.get(POOL_ENV, "")
    if not pool.isdigit():
        return

    def watch() -> None:
        while alive(int(pool)):
            time.sleep(_POOL_WATCH_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="lrbatch-pool-watch", daemon=True).start()


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
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


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log (``(no log)`` when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ProcessPool:
    """Starts processes that call ``entry`` and watches them.

    Args:
        entry: ``"package.module:function"``; the function takes the argument list and returns
            the process's exit status.
        preload: modules the fork server imports once for every forked process.
        log_dir: where each process's output goes (``<log_dir>/<name>-<index>.log``).
        name: the processes' name (in ``ps``, and their logs' names).
    """

    def __init__(
        self, entry: str, preload: Sequence[str], log_dir: Path, name: str = "worker"
    ) -> None:
        self._entry = entry
        self._preload = list(preload)
        self._log_dir = log_dir
        self._name = name
        self.members: list[Member] = []  # those not yet seen to end
        self.pids: set[int] = set()  # every process it started

    def start(
        self, label: str, index: int, argv: list[str], env: dict[str, str], fork: bool
    ) -> Member:
        """Start a process and add it to those watched and stopped.

        Args:
            label: its name in messages.
            index: its place (its log is ``<name>-<index + 1>.log``, kept across restarts).
            argv: the entry's arguments.
            env: the environment on top of this process's.
            fork: fork it from the server (else a new interpreter, e.g. for CUDA).
        """
        self._log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **env, POOL_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        log = self._log_dir / f"{self._name}-{index + 1}.log"
        with log.open("ab") as handle:
            handle.write(f"--- {time.strftime('%F %T')} {label}\n".encode())
        # (the server is started again should it have died)
        server = start_server(self._preload) if fork else None
        child: _Child
        if server is not None:
            process = server.Process(
                target=_forked_main,
                args=(self._entry, argv, env, os.getcwd(), str(log), f"lrbatch-{self._name}"),
                daemon=False,
            )
            process.start()
            child = _Forked(process)
        else:
            module, function = self._entry.split(":")
            code = (
                f"import sys; from {module} import {function}; sys.exit({function}(sys.argv[1:]))"
            )
            with log.open("ab") as handle:
                child = subprocess.Popen(
                    [sys.executable, "-c", code, *argv],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches the pool, which stops them
                )
        self.pids.add(child.pid)
        member = Member(label, index, child, log)
        self.members.append(member)
        return member

    def exited(self) -> list[Exited]:
        """The processes that ended since the last call, no longer watched."""
        ended = []
        for member in list(self.members):
            code = member.child.poll()
            if code is not None:
                self.members.remove(member)
                ended.append(Exited(member, code))
        return ended

    def stop(self, grace_s: float) -> None:
        """Send SIGTERM to every process, give them ``grace_s`` to end, kill the rest."""
        live = [m for m in self.members if m.child.poll() is None]
        for member in live:  # (SIGTERM: one too new to handle it just ends)
            member.child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        try:
            for member in live:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    member.child.wait(timeout=max(0.0, deadline - time.monotonic()))
        finally:  # (a second Ctrl-C while waiting: none is left behind either)
            for member in live:
                if member.child.poll() is None:
                    member.child.kill()
                    member.child.wait()
