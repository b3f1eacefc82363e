"""The sweep plan: from the trials so far, which (batch size, learning rate, seed) to train next.

Pure: :meth:`SweepPlan.next` reads observations (finished and running trials) and returns a
proposal, ``WAIT`` or a finish. It keeps no memory between calls, so any number of workers on
any machines that read the same study agree on what is left to do.

Per batch size, in two passes (searching comes before replicating: with one worker every
batch size is searched before any is replicated, so a trial budget that runs out leaves an
optimum everywhere rather than replicates somewhere; several workers replicate while a search
waits on a running trial):

1. *search*, with the first seed: evaluate each rule's prediction, anchored at the base point
   (B0, η0); once three or more other batch sizes are searched, also what a fitted
   saturating or surge law predicts; *bracket*: while the best learning rate sits at the edge
   of those tried, step outward by ``bracket_factor`` (rules can be wrong by 10×); *refine*:
   bisect, in log learning rate, the wider gap next to the best until both neighbours are
   within ``tolerance`` (a factor) of it: the optimum is then *pinned*.
2. *replicate*: train the best point and its two neighbours with the other seeds; if the
   seed-pooled best moves to a neighbour, replicate that one's neighbour too, then bracket and
   refine the seed-pooled optimum like the first seed's until it is pinned as well.
3. *tighten* (when ``max_seeds`` > ``seeds``): where the optimum estimated from the first
   ``seeds`` seeds (:func:`lrbatch.science.optima.batch_optima`, as the report estimates it) is
   *loose*, its 90% interval reaching further than
   :data:`~lrbatch.search.replicates.LOOSE_DECADES` from it, or no local fit found it, train as
   many more seeds as that interval says are needed (up to ``max_seeds``) at the best point
   and its neighbours, as in 2. Trial noise large against the curvature of the metric in log η
   (short runs at large batch sizes) is averaged down where it is large, at no cost where it is
   not. Every batch size is replicated with ``seeds`` before any gets more, and the added seeds
   go first where the fewest have run.

With several workers, one that would wait (every next step depends on a running trial) instead
replicates early the best point of a batch size whose search is only refining: the point whose
replicates the plan would most likely ask for next.

Without a configured η0, B0 is searched first on a broad log-spaced grid and η0 is its pinned
optimum; the other batch sizes wait for it.

No trial is wasted on a learning rate known to diverge: the stability edge rises with the batch
size, so once a learning rate diverged at some batch size (any seed), it and every higher one are
never proposed there or at any smaller batch size (:meth:`SweepPlan.stability_edge`). Such a
rule seed simply has no trial: the report reads the same edge from the diverged trial. The edge
bounds the search from above like a diverged trial at the batch size itself: a best learning rate
just below it is bracketed, and the gap up to it is refined.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lrbatch.science import MEASURED, measured, predict
from lrbatch.search.candidates import Candidate, base_grid, law_candidates, rule_candidates
from lrbatch.search.decisions import (
    SAME_LR,
    WAIT,
    BatchState,
    Finished,
    Observation,
    Proposal,
    Shortfall,
    Wait,
    below,
    same_lr,
)
from lrbatch.search.line_search import LineSearch
from lrbatch.search.replicates import early_replicate, replicate, seeds_wanted

__all__ = ["SweepPlan"]


@dataclass(frozen=True)
class SweepPlan:
    """The sweep's settings (``sweep.*`` in the config). See the module docstring."""

    batch_sizes: tuple[int, ...]
    base_batch: int
    lr_min: float
    lr_max: float
    base_lr: float | None = None
    rules: tuple[str, ...] = ("constant", "linear", "square_root")
    b_noise: float | None = None
    eps_max: float | None = None
    laws: tuple[str, ...] = ("saturating", "surge")
    bracket_factor: float = 4.0
    tolerance: float = 1.5
    seeds: int = 2
    max_seeds: int = 0  # up to this many where the optimum is loose (≤ seeds: no more)
    max_trials: int = 200
    base_grid_per_decade: int = 2
    minimize: bool = True
    # (batch size, trials trained together there); 1 where not listed (hardware.pack)
    pack: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_config(cls, sweep: Any, direction: str = "minimize", pack: Any = 1) -> SweepPlan:
        """Build from the (validated) ``sweep`` config section, with ``hardware.pack`` trials
        trained together at every batch size (``auto``: none yet, the worker chooses each)."""
        batch_sizes = tuple(sorted({int(b) for b in sweep.batch_sizes}))
        packs = () if pack == "auto" else tuple((b, int(pack)) for b in batch_sizes)
        return cls(
            batch_sizes=batch_sizes,
            base_batch=int(sweep.base_batch or batch_sizes[0]),
            lr_min=float(sweep.lr_min),
            lr_max=float(sweep.lr_max),
            base_lr=None if sweep.base_lr is None else float(sweep.base_lr),
            rules=tuple(sweep.rules),
            b_noise=None if sweep.b_noise is None else float(sweep.b_noise),
            eps_max=None if sweep.get("eps_max") is None else float(sweep.eps_max),
            laws=tuple(sweep.laws),
            bracket_factor=float(sweep.bracket_factor),
            tolerance=float(sweep.tolerance),
            seeds=int(sweep.seeds),
            max_seeds=int(sweep.max_seeds),
            max_trials=int(sweep.max_trials),
            base_grid_per_decade=int(sweep.base_grid_per_decade),
            minimize=direction == "minimize",
            pack=packs,
        )

    # -- public ---------------------------------------------------------------------------

    def next(self, observations: Iterable[Observation]) -> Proposal | Wait | Finished:
        """What to train next, given every finished and running trial of the study."""
        decision = self.next_pack(observations)
        return decision[0] if isinstance(decision, tuple) else decision

    def next_pack(
        self, observations: Iterable[Observation]
    ) -> tuple[Proposal, ...] | Wait | Finished:
        """What to train next, as a pack: up to :meth:`pack_size` proposals at one batch size
        and seed, which can train together (the first is :meth:`next`'s). With pack size 1,
        one proposal, the same as :meth:`next`."""
        observations = list(observations)
        states = self.states(observations)
        if all(state.phase == "done" for state in states.values()):
            return Finished("complete")
        left = self.max_trials - len(observations)
        if left <= 0:
            return Finished("budget")
        for phase in ("search", "replicate"):
            for state in states.values():
                if state.phase == phase and state.pack:
                    return state.pack[:left]
        # more seeds: first where fewest have run, so that a budget running out shares them
        tightening = [s.pack for s in states.values() if s.phase == "tighten" and s.pack]
        if tightening:
            chosen = min(tightening, key=lambda p: p[0].seed if p[0].reason == "replicate" else 0)
            return chosen[:left]
        early = early_replicate(observations, states, self.seeds)
        return (early,) if early is not None else WAIT

    def pack_size(self, batch: int) -> int:
        """How many trials at ``batch`` train together (:attr:`pack`; 1 where not listed)."""
        return next((size for b, size in self.pack if b == batch), 1)

    def states(self, observations: Sequence[Observation]) -> dict[int, BatchState]:
        """Each batch size's state, in the order the plan works on them."""
        by_batch: dict[int, list[Observation]] = {b: [] for b in self.batch_sizes}
        for obs in observations:
            if obs.batch_size in by_batch:
                by_batch[obs.batch_size].append(obs)
        states: dict[int, BatchState] = {}
        base_lr = self.anchor_lr(observations)
        searched: dict[int, float] = {}  # first-seed optima of batch sizes searched, bracketed
        for batch in self.order():
            edge = self.stability_edge(observations, batch)
            states[batch] = self._state(batch, by_batch[batch], base_lr, searched, edge)
            if states[batch].phase in ("replicate", "done"):
                first_seed = [o for o in by_batch[batch] if o.seed == 0]
                lr, _, bracketed = self._line_search.best(first_seed)
                if lr is not None and bracketed:
                    searched[batch] = lr
        return states

    @property
    def seed_limit(self) -> int:
        """The most seeds a batch size trains: ``max_seeds``, and never fewer than ``seeds``."""
        return max(self.seeds, self.max_seeds)

    def anchor_lr(self, observations: Sequence[Observation]) -> float | None:
        """η0: the configured base learning rate, or the optimum pinned at B0 by the broad
        search (first seed), or None while that search runs."""
        if self.base_lr is not None:
            return self.base_lr
        at_base = [o for o in observations if o.batch_size == self.base_batch and o.seed == 0]
        edge = self.stability_edge(observations, self.base_batch)
        candidates = self._candidates(self.base_batch, None)
        search = self._line_search
        _, searching = search.next(
            self.base_batch, at_base, candidates, edge, self.pack_size(self.base_batch)
        )
        return None if searching else search.best(at_base)[0]

    def stability_edge(self, observations: Sequence[Observation], batch: int) -> float:
        """The lowest learning rate that diverged at ``batch`` or at any larger batch size (any
        seed), or inf. The edge rises with the batch size, so a learning rate at or above it
        would diverge at ``batch`` too: it is never proposed there."""
        diverged = (o.lr for o in observations if o.diverged and o.batch_size >= batch)
        return min(diverged, default=math.inf)

    def diverges(self, observations: Sequence[Observation], batch: int, lr: float) -> bool:
        """Whether ``lr`` at ``batch`` lies at or above the stability edge (never proposed)."""
        return not below(lr, self.stability_edge(observations, batch))

    def shortfalls(self, observations: Sequence[Observation]) -> list[Shortfall]:
        """The batch sizes without a real optimum, in increasing batch size.

        A real optimum is a best learning rate whose trials (every seed tried there) finished
        without diverging and, in a target budget, reached the target; and that is bracketed:
        some learning rate was tried below it, and one above it, or the stability edge lies
        above it. A sweep is complete when its plan is finished and this list is empty.
        """
        states = self.states(observations)
        found = []
        for batch, state in sorted(states.items()):
            here = [o for o in observations if o.batch_size == batch and o.value is not None]
            if state.best_lr is None or state.best_value is None:
                stuck = not below(self.lr_min, state.edge)  # nothing within the bounds trains
                found.append(Shortfall(batch, "diverged" if stuck else "untried"))
            elif not math.isfinite(state.best_value):
                missed = any(o.reached_target is False for o in here)
                found.append(Shortfall(batch, "missed_target" if missed else "diverged"))
            else:
                lrs = list(self._line_search.scores(here))
                if same_lr(state.best_lr, lrs[0]):
                    bound = state.best_lr <= self.lr_min * SAME_LR
                    found.append(Shortfall(batch, "at_lr_min" if bound else "below", state.best_lr))
                elif same_lr(state.best_lr, lrs[-1]) and math.isinf(state.edge):
                    bound = state.best_lr >= self.lr_max / SAME_LR
                    found.append(Shortfall(batch, "at_lr_max" if bound else "above", state.best_lr))
        return found

    def order(self) -> list[int]:
        """Batch sizes in working order: B0 first, then outward in log distance."""
        return sorted(self.batch_sizes, key=lambda b: (abs(math.log(b / self.base_batch)), b))

    def predictions(self, batch: int, base_lr: float) -> dict[str, float]:
        """Each configured rule's learning rate at ``batch`` (unclipped)."""
        return predict(base_lr, self.base_batch, batch, self.rules, self.b_noise, self.eps_max)

    # -- per batch size -------------------------------------------------------------------

    def _state(
        self,
        batch: int,
        observations: list[Observation],
        base_lr: float | None,
        searched: dict[int, float],
        edge: float,
    ) -> BatchState:
        first_seed = [o for o in observations if o.seed == 0]
        trials = len(observations)
        if base_lr is None and batch != self.base_batch:
            return BatchState(batch, "waiting", trials=trials, edge=edge)
        search, room = self._line_search, self.pack_size(batch)
        candidates = self._candidates(batch, base_lr)
        pack, searching = search.next(batch, first_seed, candidates, edge, room)
        if searching and not any(o.reason in ("bracket", "refine") for o in first_seed):
            # still seeding: add what laws fitted to other batch sizes predict here
            candidates += law_candidates(self.laws, searched, batch, self.tolerance, search.clip)
            pack, searching = search.next(batch, first_seed, candidates, edge, room)
        best_lr, best_value, bracketed = search.best(first_seed)

        def state(phase: str) -> BatchState:
            first = pack[0] if pack else None
            return BatchState(
                batch, phase, best_lr, best_value, bracketed, trials, first, edge, pack
            )

        if searching:
            return state("search")
        if best_lr is None:  # every lr within the bounds lies above the stability edge
            return BatchState(batch, "done", bracketed=False, trials=trials, edge=edge)
        pack, pooled = replicate(search, batch, observations, edge, self.seeds, room)
        phase = "replicate"
        if pooled is not None and not pack and self.seed_limit > self.seeds:
            base = tuple(o for o in observations if o.seed < self.seeds)
            wanted = seeds_wanted(base, self.minimize, self.seeds, self.seed_limit)
            if wanted > self.seeds:
                pack, pooled = replicate(search, batch, observations, edge, wanted, room)
                phase = "tighten"
        if pooled is None:
            return state(phase)
        best_lr, best_value, bracketed = pooled
        return state(phase if pack else "done")

    @property
    def _line_search(self) -> LineSearch:
        """How each batch size's best learning rate is searched, by these settings."""
        return LineSearch(
            self.lr_min, self.lr_max, self.bracket_factor, self.tolerance, self.minimize
        )

    def _candidates(self, batch: int, base_lr: float | None) -> list[Candidate]:
        """Where the search at ``batch`` starts: each rule's prediction from η0, or, without
        η0 (the broad search at B0), a log-spaced grid and the ``measured`` rule's point."""
        clip = self._line_search.clip
        if base_lr is not None:
            return rule_candidates(self.predictions(batch, base_lr), clip)
        grid = base_grid(self.lr_min, self.lr_max, self.base_grid_per_decade)
        seed = measured(batch, self.b_noise, self.eps_max) if MEASURED in self.rules else None
        return grid + ([] if seed is None else [Candidate(clip(seed), "rule:measured", SAME_LR)])
