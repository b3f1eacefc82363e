"""The search: the sweep plan (what to train next, pure), the Optuna sampler that runs it,
the one reader of a study's trials, storages, listing and importing studies, calibration
against sweeps with a known answer, and each batch size's progress.
"""

from typing import TYPE_CHECKING

from lrbatch._exports import lazy_exports

if TYPE_CHECKING:
    from lrbatch.search.calibration import calibrate
    from lrbatch.search.decisions import Finished, Observation, Proposal, Shortfall, same_point
    from lrbatch.search.importing import import_csv
    from lrbatch.search.plan import SweepPlan
    from lrbatch.search.progress import format_lr, summarize
    from lrbatch.search.sampler import LRBatchSampler, next_pack, next_step, stop_when_plan_finished
    from lrbatch.search.storage import (
        check_storage,
        default_url,
        open_storage,
        planning_lock_path,
        redact,
    )
    from lrbatch.search.studies import delete_study, runs_storages, study_rows
    from lrbatch.search.study_io import (
        NoiseRun,
        TrialRun,
        find_last_study,
        load_points,
        noise_records,
        noise_user_attrs,
        observations,
        open_study,
        outcome,
        placed,
        point,
        ran_by,
        record_noise_run,
        record_pack_choice,
        recorded_noise_run,
        recorded_pack_choice,
        short_of_target,
        study_names,
        sweep_anchor,
        trial_noise,
        trial_run,
    )
else:
    __getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "Finished",
    "LRBatchSampler",
    "NoiseRun",
    "Observation",
    "Proposal",
    "Shortfall",
    "SweepPlan",
    "TrialRun",
    "calibrate",
    "check_storage",
    "default_url",
    "delete_study",
    "find_last_study",
    "format_lr",
    "import_csv",
    "load_points",
    "next_pack",
    "next_step",
    "noise_records",
    "noise_user_attrs",
    "observations",
    "open_storage",
    "open_study",
    "outcome",
    "placed",
    "planning_lock_path",
    "point",
    "ran_by",
    "record_noise_run",
    "record_pack_choice",
    "recorded_noise_run",
    "recorded_pack_choice",
    "redact",
    "runs_storages",
    "same_point",
    "short_of_target",
    "stop_when_plan_finished",
    "study_names",
    "study_rows",
    "summarize",
    "sweep_anchor",
    "trial_noise",
    "trial_run",
]
