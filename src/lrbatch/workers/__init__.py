"""Workers: the ask/train/tell loop, the process pool and its slots (one per GPU or CPU
core), opening a study for work, interrupts, the pack choice, the sweep's supervisor and its
live display.
"""

from typing import TYPE_CHECKING

from lrbatch._exports import lazy_exports

if TYPE_CHECKING:
    from lrbatch.workers.prepare import objective_direction, storage_url
    from lrbatch.workers.slots import cpu_workers, start_worker_server
    from lrbatch.workers.sweep import SweepOutcome, WorkerFailed, join_sweep, run_sweep
    from lrbatch.workers.worker import STORAGE_ENV
else:
    __getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "STORAGE_ENV",
    "SweepOutcome",
    "WorkerFailed",
    "cpu_workers",
    "join_sweep",
    "objective_direction",
    "run_sweep",
    "start_worker_server",
    "storage_url",
]
