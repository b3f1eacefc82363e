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
   *loose*, its 90% interval reaching further than :data:`LOOSE_DECADES` from it, or no local
   fit found it, train as many more seeds as that interval says are needed (up to
   ``max_seeds``) at the best point and its neighbours, as in 2. Trial noise large against the
   curvature of the metric in log η (short runs at large batch sizes) is averaged down where it
   is large, at no cost where it is not. Every batch size is replicated with ``seeds`` before
   any gets more, and the added seeds go first where the fewest have run.

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
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from scipy import stats

from lrbatch.science import (
    BEST_POINT,
    MEASURED,
    TrialPoint,
    batch_optima,
    fit_law,
    measured,
    predict,
)

__all__ = [
    "LOOSE_DECADES",
    "WAIT",
    "BatchState",
    "Finished",
    "Observation",
    "Proposal",
    "Shortfall",
    "SweepPlan",
    "Wait",
    "same_point",
]

_SAME = 1.01  # two learning rates within 1% are the same point
# An optimum is loose while its 90% interval reaches further than this from it, in decades
# (log10 η): the goal is 95% of optima within 0.1 decade of the truth (benchmarks/calibration.py).
LOOSE_DECADES = 0.1


@dataclass(frozen=True)
class Observation:
    """One trial, as the plan sees it. ``value`` is None while the trial runs."""

    batch_size: int
    lr: float
    seed: int
    value: float | None
    diverged: bool = False
    reason: str | None = None  # why it was proposed, where the study recorded it
    reached_target: bool | None = None  # target budget: False for a run that missed it


@dataclass(frozen=True)
class Proposal:
    """What to train next, and why (``rule:<names>``, ``law:<name>``, ``base_grid``,
    ``bracket``, ``refine``, ``replicate`` or ``explore``)."""

    batch_size: int
    lr: float
    seed: int
    reason: str


@dataclass(frozen=True)
class Wait:
    """Nothing can be proposed until a running trial finishes."""


@dataclass(frozen=True)
class Finished:
    """The sweep is over: ``why`` is ``"complete"`` or ``"budget"`` (``max_trials`` spent)."""

    why: str


WAIT = Wait()


@dataclass(frozen=True)
class BatchState:
    """Where one batch size stands.

    Attributes:
        phase: ``waiting`` (for η0), ``search`` (seeding, bracketing, refining), ``replicate``
            (with ``seeds``), ``tighten`` (pinned and replicated with ``seeds``, but loose:
            more seeds, up to ``max_seeds``) or ``done``.
        best_lr: best learning rate so far (seed-pooled once replicated), or None.
        best_value: its metric.
        bracketed: False when the best learning rate sits at ``lr_min`` or ``lr_max``, or no
            learning rate within the bounds lies below the stability edge.
        trials: finished and running trials at this batch size.
        proposal: what this batch size needs next, if anything can be proposed now.
        pack: the proposals that can train together with it (same batch size and seed; it
            first), up to the plan's pack size here (:attr:`SweepPlan.pack`).
        edge: the stability edge here (:meth:`SweepPlan.stability_edge`; inf when none).
    """

    batch_size: int
    phase: str
    best_lr: float | None = None
    best_value: float | None = None
    bracketed: bool = True
    trials: int = 0
    proposal: Proposal | None = field(default=None, compare=False)
    edge: float = math.inf
    pack: tuple[Proposal, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Shortfall:
    """Why a batch size has no optimum to report (see :meth:`SweepPlan.shortfalls`).

    Attributes:
        batch_size: effective batch size.
        why: ``untried`` (no trial finished here), ``diverged`` (every trial diverged, or every
            learning rate within the bounds lies above the stability edge), ``missed_target``
            (no learning rate reached the target with every seed without diverging),
            ``at_lr_min`` or ``at_lr_max`` (the best learning rate is that bound: the optimum
            may lie beyond it), ``below`` or ``above`` (the best is the lowest, or the
            highest, tried, within the bounds: the search stopped before bracketing it).
        best_lr: the best learning rate tried, where there is one.
    """

    batch_size: int
    why: str
    best_lr: float | None = None


def same_point(a: Proposal, b: Proposal) -> bool:
    """Whether two proposals train the same trial (batch size, seed and lr to 1e-9)."""
    return (a.batch_size, a.seed) == (b.batch_size, b.seed) and math.isclose(
        a.lr, b.lr, rel_tol=1e-9
    )


def _same(a: float, b: float) -> bool:
    return max(a, b) / min(a, b) < _SAME


def _below(lr: float, edge: float) -> bool:
    """Whether ``lr`` lies below the stability edge ``edge`` (and is not the same point)."""
    return lr * _SAME <= edge


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
        early = self._early_replicate(observations, states)
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
                lr, _, bracketed = self._search_best([o for o in by_batch[batch] if o.seed == 0])
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
        _, searching = self._search(self.base_batch, at_base, candidates, edge)
        return None if searching else self._search_best(at_base)[0]

    def stability_edge(self, observations: Sequence[Observation], batch: int) -> float:
        """The lowest learning rate that diverged at ``batch`` or at any larger batch size (any
        seed), or inf. The edge rises with the batch size, so a learning rate at or above it
        would diverge at ``batch`` too: it is never proposed there."""
        diverged = (o.lr for o in observations if o.diverged and o.batch_size >= batch)
        return min(diverged, default=math.inf)

    def diverges(self, observations: Sequence[Observation], batch: int, lr: float) -> bool:
        """Whether ``lr`` at ``batch`` lies at or above the stability edge (never proposed)."""
        return not _below(lr, self.stability_edge(observations, batch))

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
                stuck = not _below(self.lr_min, state.edge)  # nothing within the bounds trains
                found.append(Shortfall(batch, "diverged" if stuck else "untried"))
            elif not math.isfinite(state.best_value):
                missed = any(o.reached_target is False for o in here)
                found.append(Shortfall(batch, "missed_target" if missed else "diverged"))
            else:
                lrs = list(self._scores(here))
                if _same(state.best_lr, lrs[0]):
                    bound = state.best_lr <= self.lr_min * _SAME
                    found.append(Shortfall(batch, "at_lr_min" if bound else "below", state.best_lr))
                elif _same(state.best_lr, lrs[-1]) and math.isinf(state.edge):
                    bound = state.best_lr >= self.lr_max / _SAME
                    found.append(Shortfall(batch, "at_lr_max" if bound else "above", state.best_lr))
        return found

    def order(self) -> list[int]:
        """Batch sizes in working order: B0 first, then outward in log distance."""
        return sorted(self.batch_sizes, key=lambda b: (abs(math.log(b / self.base_batch)), b))

    def predictions(self, batch: int, base_lr: float) -> dict[str, float]:
        """Each configured rule's learning rate at ``batch`` (unclipped)."""
        return predict(base_lr, self.base_batch, batch, self.rules, self.b_noise, self.eps_max)

    # -- per batch size -------------------------------------------------------------------

    def _early_replicate(
        self, observations: Sequence[Observation], states: dict[int, BatchState]
    ) -> Proposal | None:
        """Work for a worker that would otherwise wait: a replicate of the best point of a
        batch size whose search only waits on refining trials. Refining narrows in around the
        best, so that point is most often still the best when the search ends, and then its
        replicates are the first the plan asks for; if not, they are more data at a point
        next to the optimum. Only reached with trials running: by other workers, or left
        running by a killed one (one worker alone on a fresh study never gets here).
        """
        for batch, state in states.items():
            if state.phase != "search" or state.best_lr is None or not state.bracketed:
                continue
            if not _below(state.best_lr, state.edge):
                continue
            at_batch = [o for o in observations if o.batch_size == batch]
            running = [o for o in at_batch if o.seed == 0 and o.value is None]
            if not running or any(o.reason != "refine" for o in running):
                continue
            for seed in range(1, self.seeds):
                if not any(o.seed == seed and _same(o.lr, state.best_lr) for o in at_batch):
                    return Proposal(batch, state.best_lr, seed, "replicate")
        return None

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
        candidates = self._candidates(batch, base_lr)
        pack, searching = self._search(batch, first_seed, candidates, edge)
        if searching and not any(o.reason in ("bracket", "refine") for o in first_seed):
            # still seeding: add what laws fitted to other batch sizes predict here
            candidates += self._law_candidates(batch, searched)
            pack, searching = self._search(batch, first_seed, candidates, edge)
        best_lr, best_value, bracketed = self._search_best(first_seed)

        def state(phase: str) -> BatchState:
            first = pack[0] if pack else None
            return BatchState(
                batch, phase, best_lr, best_value, bracketed, trials, first, edge, pack
            )

        if searching:
            return state("search")
        if best_lr is None:  # every lr within the bounds lies above the stability edge
            return BatchState(batch, "done", bracketed=False, trials=trials, edge=edge)
        pack, pooled = self._replicate(batch, observations, edge, self.seeds)
        phase = "replicate"
        if pooled is not None and not pack and self.seed_limit > self.seeds:
            base = tuple(o for o in observations if o.seed < self.seeds)
            wanted = _seeds_wanted(base, self.minimize, self.seeds, self.seed_limit)
            if wanted > self.seeds:
                pack, pooled = self._replicate(batch, observations, edge, wanted)
                phase = "tighten"
        if pooled is None:
            return state(phase)
        best_lr, best_value, bracketed = pooled
        return state(phase if pack else "done")

    def _clip(self, lr: float) -> float:
        return min(max(lr, self.lr_min), self.lr_max)

    def _candidates(self, batch: int, base_lr: float | None) -> list[tuple[float, str, float]]:
        """Seed points as (lr, reason, how close an existing point must be to count as it)."""
        if base_lr is None:  # broad search for η0 at B0
            lo = math.ceil(math.log10(self.lr_min) * self.base_grid_per_decade - 1e-9)
            hi = math.floor(math.log10(self.lr_max) * self.base_grid_per_decade + 1e-9)
            grid = [10 ** (k / self.base_grid_per_decade) for k in range(lo, hi + 1)]
            grid = grid or [math.sqrt(self.lr_min * self.lr_max)]  # bounds closer than the grid
            points = [(lr, "base_grid", _SAME) for lr in grid]
            seed = measured(batch, self.b_noise, self.eps_max) if MEASURED in self.rules else None
            return points + ([] if seed is None else [(self._clip(seed), "rule:measured", _SAME)])
        merged: list[tuple[float, list[str]]] = []
        for name, lr in self.predictions(batch, base_lr).items():
            lr = self._clip(lr)
            match = next((m for m in merged if _same(m[0], lr)), None)
            if match:
                match[1].append(name)
            else:
                merged.append((lr, [name]))
        return [(lr, "rule:" + "+".join(names), _SAME) for lr, names in merged]

    def _law_candidates(
        self, batch: int, searched: dict[int, float]
    ) -> list[tuple[float, str, float]]:
        """What each law fitted to three or more other batch sizes' optima predicts here; a law
        is a guide, not a rule under test, so it is skipped near a tried point."""
        others = tuple(sorted((b, lr) for b, lr in searched.items() if b != batch))
        if len(others) < 3:
            return []
        near = math.sqrt(self.tolerance)
        return [(self._clip(_fitted(law, others, batch)), f"law:{law}", near) for law in self.laws]

    def _scores(self, observations: list[Observation]) -> dict[float, float]:
        """Mean score per learning rate, in increasing lr (lower is better; diverged is +inf)."""
        grouped: dict[float, list[float]] = {}
        for obs in observations:
            if obs.value is None:
                continue
            key = next((lr for lr in grouped if _same(lr, obs.lr)), obs.lr)
            if obs.diverged or math.isnan(obs.value):
                score = math.inf
            else:
                score = obs.value if self.minimize else -obs.value
            grouped.setdefault(key, []).append(score)
        return {lr: sum(v) / len(v) for lr, v in sorted(grouped.items())}

    def _value(self, score: float) -> float:
        return score if self.minimize else -score

    def _bracketed(self, best: float, lrs: list[float]) -> bool:
        """False when the best lr is the lowest tried at lr_min, or the highest at lr_max."""
        return not (
            (best == lrs[0] and best <= self.lr_min * _SAME)
            or (best == lrs[-1] and best >= self.lr_max / _SAME)
        )

    def _search_best(
        self, first_seed: list[Observation]
    ) -> tuple[float | None, float | None, bool]:
        scores = self._scores(first_seed)
        if not scores:
            return None, None, True
        best = _best(scores)
        return best, self._value(scores[best]), self._bracketed(best, list(scores))

    def _step(
        self, batch: int, seed: int, scores: dict[float, float], edge: float
    ) -> tuple[Proposal, ...]:
        """Bracket (best at an edge) or refine (a gap next to the best wider than the
        tolerance) around the best of ``scores``, the stability edge counting as a diverged
        lr; none when the optimum is pinned, or the step would lie above the edge.

        One step, or with a pack size k > 1 here, k at once: bracketing goes k steps of
        ``bracket_factor`` outward; refining puts k log-spaced points into the two gaps next
        to the best, each new point to the gap whose parts are then widest, so that one pack
        narrows both gaps as far as k points can (k = 1: the wider gap's midpoint)."""
        if math.isfinite(edge) and not any(_same(edge, lr) for lr in scores):
            scores = dict(sorted({**scores, edge: math.inf}.items()))
        lrs = list(scores)
        i = lrs.index(_best(scores))
        room = self.pack_size(batch)
        steps: list[tuple[float, str]] = []
        if i == 0 and lrs[0] > self.lr_min * _SAME:
            steps = [(lrs[0] / self.bracket_factor**j, "bracket") for j in range(1, room + 1)]
        elif i == len(lrs) - 1 and lrs[-1] < self.lr_max / _SAME:
            steps = [(lrs[-1] * self.bracket_factor**j, "bracket") for j in range(1, room + 1)]
        else:
            gaps = [(lrs[i - 1], lrs[i]) if i > 0 else None]
            gaps.append((lrs[i], lrs[i + 1]) if i < len(lrs) - 1 else None)
            parts = [0, 0]  # points put into the low and the high gap
            for _ in range(room):
                widths = [
                    (g[1] / g[0]) ** (1 / (n + 1)) if g else 0.0
                    for g, n in zip(gaps, parts, strict=True)
                ]
                if max(widths) <= self.tolerance:
                    break
                parts[0 if widths[0] >= widths[1] else 1] += 1
            for gap, n in zip(gaps, parts, strict=True):
                if gap and n == 1:  # (the midpoint, as one trial at a time computes it)
                    steps.append((math.sqrt(gap[0] * gap[1]), "refine"))
                elif gap and n:
                    ratio = gap[1] / gap[0]
                    steps += [(gap[0] * ratio ** (j / (n + 1)), "refine") for j in range(1, n + 1)]
        pack: list[Proposal] = []
        for lr, reason in steps:
            lr = self._clip(lr)
            if _below(lr, edge) and not any(_same(lr, p.lr) for p in pack):
                pack.append(Proposal(batch, lr, seed, reason))
        return tuple(pack)

    def _search(
        self,
        batch: int,
        first_seed: list[Observation],
        candidates: list[tuple[float, str, float]],
        edge: float,
    ) -> tuple[tuple[Proposal, ...], bool]:
        """The next search points at ``batch`` (one, or up to the pack size here), and whether
        the search still goes on. Candidates at or above the stability edge are skipped.

        A pack with room beyond the candidates not yet tried takes bracket steps outward from
        them too, below and above in turn: should the best lie at either end, its next step
        has run already."""
        tried = [o.lr for o in first_seed]
        room = self.pack_size(batch)
        pack: list[Proposal] = []
        for lr, reason, near in candidates:
            taken = tried + [p.lr for p in pack]
            if _below(lr, edge) and not any(max(lr, t) / min(lr, t) < near for t in taken):
                pack.append(Proposal(batch, lr, 0, reason))
        if pack:
            pack = pack[:room]
            lrs = sorted(tried + [p.lr for p in pack])
            low, high = lrs[0], lrs[-1]
            for j in range(2 * room):
                if len(pack) >= room:
                    break
                if j % 2 == 0 and low > self.lr_min * _SAME:
                    low = self._clip(low / self.bracket_factor)
                    pack.append(Proposal(batch, low, 0, "bracket"))
                elif j % 2 == 1 and high < self.lr_max / _SAME:
                    high = self._clip(high * self.bracket_factor)
                    if _below(high, edge):
                        pack.append(Proposal(batch, high, 0, "bracket"))
            return tuple(pack), True
        if any(o.value is None for o in first_seed):
            return (), True  # the next step depends on a running trial
        steps = self._step(batch, 0, self._scores(first_seed), edge)
        return steps, bool(steps)

    def _replicate(
        self, batch: int, observations: list[Observation], edge: float, seeds: int
    ) -> tuple[tuple[Proposal, ...], tuple[float, float, bool] | None]:
        """The next replicates (or pooled refinement) at ``batch``, and once each of ``seeds``
        seeds has run at the best point and its neighbours, the seed-pooled (best lr, value,
        bracketed). A point at or above the stability edge (a neighbour that diverged) is not
        replicated. Replicates come one, or up to the pack size here, at a time: the points
        that lack the same seed, nearest the best first."""
        lrs = list(self._scores([o for o in observations if o.seed == 0]))
        best = lrs.index(_best(self._scores([o for o in observations if o.seed == 0])))
        targets = {k for k in (best - 1, best, best + 1) if 0 <= k < len(lrs)}

        def lacks(k: int, seed: int) -> bool:
            return _below(lrs[k], edge) and not any(
                o.seed == seed and _same(o.lr, lrs[k]) for o in observations
            )

        while True:
            for k in sorted(targets, key=lambda k: abs(k - best)):
                seed = next((s for s in range(1, seeds) if lacks(k, s)), None)
                if seed is not None:
                    ks = sorted(targets, key=lambda j: (j != k, abs(j - best)))
                    pack = [
                        Proposal(batch, lrs[j], seed, "replicate") for j in ks if lacks(j, seed)
                    ]
                    return tuple(pack[: self.pack_size(batch)]), None
            chosen = [o for o in observations if any(_same(o.lr, lrs[k]) for k in targets)]
            if any(o.value is None for o in chosen):
                return (), None
            pooled = self._scores(chosen)
            top = _best(pooled)
            k_top = next(k for k in targets if _same(lrs[k], top))
            missing = {k for k in (k_top - 1, k_top + 1) if 0 <= k < len(lrs)} - targets
            if missing:
                targets |= missing
                continue
            # The pooled best and both its neighbours have every seed: is it still pinned?
            step = self._step(batch, 0, pooled, edge)
            return step, (top, self._value(pooled[top]), self._bracketed(top, lrs))


def _best(scores: dict[float, float]) -> float:
    """The learning rate with the lowest score (the lower lr on a tie)."""
    return min(scores, key=lambda lr: (scores[lr], lr))


@lru_cache(maxsize=1024)
def _seeds_wanted(
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


@lru_cache(maxsize=256)
def _fitted(law: str, optima: tuple[tuple[int, float], ...], batch: int) -> float:
    batches, lrs = zip(*optima, strict=True)
    return fit_law(law, batches, lrs).predict(batch)
