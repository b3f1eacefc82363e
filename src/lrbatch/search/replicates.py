"""Replicates: a batch size's best point and its neighbours trained with more seeds.

Once the first seed's search has pinned an optimum, :func:`replicate` trains the best point and
its two neighbours with the other seeds; should the seed-pooled best move to a neighbour, that
one's neighbour too; then the seed-pooled optimum is bracketed and refined like the first
seed's. :func:`seeds_wanted` says how many seeds a batch size needs for its optimum to be
tight (up to ``max_seeds``), and :func:`early_replicate` gives a worker that would wait a
replicate the plan will most likely ask for next.

Pure: numbers in, proposals out (no Optuna, no I/O).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

from scipy import stats

from lrbatch.science import BEST_POINT, TrialPoint, batch_optima
from lrbatch.search.decisions import BatchState, Observation, Proposal, below, same_lr
from lrbatch.search.line_search import LineSearch, best_lr

__all__ = ["LOOSE_DECADES", "early_replicate", "replicate", "seeds_wanted"]

# An optimum is loose while its 90% interval reaches further than this from it, in decades
# (log10 η): the goal is 95% of optima within 0.1 decade of the truth (benchmarks/calibration.py).
LOOSE_DECADES = 0.1


def replicate(
    search: LineSearch,
    batch: int,
    observations: list[Observation],
    edge: float,
    seeds: int,
    room: int,
) -> tuple[tuple[Proposal, ...], tuple[float, float, bool] | None]:
    """The next replicates (or pooled refinement) at ``batch``, and once each of ``seeds``
    seeds has run at the best point and its neighbours, the seed-pooled (best lr, value,
    bracketed). A point at or above the stability edge (a neighbour that diverged) is not
    replicated. Replicates come one, or up to ``room`` (the pack size here), at a time: the
    points that lack the same seed, nearest the best first."""
    first_seed = search.scores([o for o in observations if o.seed == 0])
    lrs = list(first_seed)
    best = lrs.index(best_lr(first_seed))
    targets = {k for k in (best - 1, best, best + 1) if 0 <= k < len(lrs)}

    def lacks(k: int, seed: int) -> bool:
        return below(lrs[k], edge) and not any(
            o.seed == seed and same_lr(o.lr, lrs[k]) for o in observations
        )

    while True:
        for k in sorted(targets, key=lambda k: abs(k - best)):
            seed = next((s for s in range(1, seeds) if lacks(k, s)), None)
            if seed is not None:
                ks = sorted(targets, key=lambda j: (j != k, abs(j - best)))
                pack = [Proposal(batch, lrs[j], seed, "replicate") for j in ks if lacks(j, seed)]
                return tuple(pack[:room]), None
        chosen = [o for o in observations if any(same_lr(o.lr, lrs[k]) for k in targets)]
        if any(o.value is None for o in chosen):
            return (), None
        pooled = search.scores(chosen)
        top = best_lr(pooled)
        k_top = next(k for k in targets if same_lr(lrs[k], top))
        missing = {k for k in (k_top - 1, k_top + 1) if 0 <= k < len(lrs)} - targets
        if missing:
            targets |= missing
            continue
        # The pooled best and both its neighbours have every seed: is it still pinned?
        step = search.step(batch, 0, pooled, edge, room)
        return step, (top, search.value(pooled[top]), search.bracketed(top, lrs))


@lru_cache(maxsize=1024)
def seeds_wanted(
    observations: tuple[Observation, ...], minimize: bool, seeds: int, limit: int
) -> int:
    """How many seeds one batch size needs, judged once from its trials with the first
    ``seeds`` seeds (every one finished): the fewest, up to ``limit``, for which the optimum's
    90% interval, estimated as the report estimates it, would reach no further than
    :data:`LOOSE_DECADES` from it: its half-width shrinks like √(seeds/n) and with the t
    quantile of n − 1 degrees of freedom. ``limit`` where no local fit found an optimum (the
    best tried lr stands, between its neighbours). Judged on the first seeds only, so that the
    added seeds' own luck does not decide when to stop adding them (Stein's two-stage
    design). Cached: the plan asks again before every trial."""
    points = [
        TrialPoint(o.batch_size, o.lr, o.seed, o.value, o.diverged)
        for o in observations
        if o.value is not None
    ]
    optima = batch_optima(points, minimize)
    if not optima:  # every trial diverged: no seed will find an optimum here
        return seeds
    optimum = optima[0]
    if optimum.method == BEST_POINT:
        return limit
    reach = math.log10(max(optimum.lr_opt / optimum.lr_low, optimum.lr_high / optimum.lr_opt))
    if seeds == 1:  # one seed's interval carries trial noise only: no seed scatter to shrink
        return seeds if reach <= LOOSE_DECADES else limit
    t_now = float(stats.t.ppf(0.95, seeds - 1))
    for n in range(seeds, limit):
        if reach * math.sqrt(seeds / n) * float(stats.t.ppf(0.95, n - 1)) / t_now <= LOOSE_DECADES:
            return n
    return limit


def early_replicate(
    observations: Sequence[Observation], states: dict[int, BatchState], seeds: int
) -> Proposal | None:
    """Work for a worker that would otherwise wait: a replicate (one of ``seeds`` seeds) of
    the best point of a batch size whose search only waits on refining trials. Refining
    narrows in around the best, so that point is most often still the best when the search
    ends, and then its replicates are the first the plan asks for; if not, they are more data
    at a point next to the optimum. Only reached with trials running: by other workers, or
    left running by a killed one (one worker alone on a fresh study never gets here).
    """
    for batch, state in states.items():
        if state.phase != "search" or state.best_lr is None or not state.bracketed:
            continue
        if not below(state.best_lr, state.edge):
            continue
        at_batch = [o for o in observations if o.batch_size == batch]
        running = [o for o in at_batch if o.seed == 0 and o.value is None]
        if not running or any(o.reason != "refine" for o in running):
            continue
        for seed in range(1, seeds):
            if not any(o.seed == seed and same_lr(o.lr, state.best_lr) for o in at_batch):
                return Proposal(batch, state.best_lr, seed, "replicate")
    return None
