"""The plan on synthetic objectives whose optimum per batch size is known."""

import math
from collections.abc import Callable

import numpy as np
import pytest

from lrbatch.search.plan import WAIT, Finished, Observation, Proposal, Shortfall, SweepPlan

BATCHES = (16, 32, 64, 128, 256, 512)


def run_plan(
    plan: SweepPlan,
    optimum: Callable[[int], float],
    noise: float | Callable[[int], float] = 0.0,
    edge: Callable[[int], float] | None = None,
) -> tuple[list[Observation], list[Proposal], Finished]:
    """Evaluate a parabola in log lr with its minimum at optimum(B) until the plan finishes;
    ``noise``: the trials' standard deviation, or that of each batch size."""
    rng = np.random.default_rng(0)
    observations: list[Observation] = []
    proposals: list[Proposal] = []
    while True:
        decision = plan.next(observations)
        if isinstance(decision, Finished):
            return observations, proposals, decision
        assert isinstance(decision, Proposal), decision
        assert plan.lr_min <= decision.lr <= plan.lr_max
        assert_not_known_to_diverge(decision, observations)
        proposals.append(decision)
        b, lr = decision.batch_size, decision.lr
        diverged = edge is not None and lr > edge(b)
        sd = noise(b) if callable(noise) else noise
        value = math.log(lr / optimum(b)) ** 2 + 1.0 + sd * rng.normal()
        sign = 1 if plan.minimize else -1
        observations.append(
            Observation(b, lr, decision.seed, sign * value, diverged, decision.reason)
        )


def assert_not_known_to_diverge(proposal: Proposal, observations: list[Observation]) -> None:
    """No lr at or above one that diverged at this or a larger batch size (any seed)."""
    diverged = [o.lr for o in observations if o.diverged and o.batch_size >= proposal.batch_size]
    assert not diverged or proposal.lr * 1.01 <= min(diverged), (proposal, min(diverged))


def saturating_optimum(batch: int) -> float:
    return 0.5 / (1 + 100 / batch)


def plan(**overrides) -> SweepPlan:
    settings = dict(batch_sizes=BATCHES, base_batch=32, lr_min=1e-4, lr_max=100.0, seeds=1)
    settings.update(overrides)
    return SweepPlan(**settings)


@pytest.mark.parametrize("base_lr", [None, saturating_optimum(32), 10 * saturating_optimum(32)])
def test_pins_every_optimum_within_tolerance(base_lr: float | None) -> None:
    # base_lr = 10× the truth: every rule is wrong by 10×, the bracket must walk out.
    sweep = plan(base_lr=base_lr, tolerance=1.3)
    observations, _, finished = run_plan(sweep, saturating_optimum)
    assert finished.why == "complete"
    for batch, state in sweep.states(observations).items():
        assert state.phase == "done" and state.bracketed
        assert 1 / 1.3 <= state.best_lr / saturating_optimum(batch) <= 1.3, batch


def test_every_rule_prediction_is_evaluated_once() -> None:
    sweep = plan(base_lr=0.1)
    _, proposals, _ = run_plan(sweep, saturating_optimum)
    for batch in BATCHES:
        for name, lr in sweep.predictions(batch, 0.1).items():
            tried = [p for p in proposals if p.batch_size == batch and abs(p.lr / lr - 1) < 0.01]
            assert tried and name in tried[0].reason, (batch, name)
    keys = [(p.batch_size, round(math.log(p.lr), 6), p.seed) for p in proposals]
    assert len(keys) == len(set(keys)), "a point was proposed twice"
    assert sum(p.reason == "rule:constant+linear+square_root" for p in proposals) == 1  # at B0


@pytest.mark.parametrize("base_lr", [None, 0.1])
def test_the_measured_rule_seeds_every_batch_size_from_eps_max_and_b_noise(base_lr) -> None:
    # ε_max and B_noise as `lrbatch noise-scale` would measure them on this truth: the measured
    # rule lands on every optimum, whatever η0 (found by the broad search at B0, or configured)
    sweep = plan(base_lr=base_lr, rules=("linear", "measured"), b_noise=100.0, eps_max=0.5)
    observations, proposals, finished = run_plan(sweep, saturating_optimum)
    assert finished.why == "complete"
    for batch in BATCHES:
        (seeded,) = [p for p in proposals if p.batch_size == batch and "measured" in p.reason]
        assert seeded.lr == pytest.approx(saturating_optimum(batch)), batch
        assert sweep.states(observations)[batch].best_lr == pytest.approx(seeded.lr)
    # ε_max and B_noise configured without the rule (for saturating, say): no measured seed
    unasked = plan(base_lr=base_lr, rules=("linear",), b_noise=100.0, eps_max=0.5)
    assert not any("measured" in p.reason for p in run_plan(unasked, saturating_optimum)[1])


def test_fitted_laws_are_proposed_once_three_optima_are_searched() -> None:
    sweep = plan(base_lr=0.1)
    _, proposals, _ = run_plan(sweep, saturating_optimum)
    # Working order is 32 (B0), 16, 64, 128, ...: the first three have no fitted law to use.
    assert sweep.order()[:4] == [32, 16, 64, 128]
    law_batches = {p.batch_size for p in proposals if p.reason.startswith("law:")}
    assert law_batches == {128, 256, 512}
    # the saturating law, fitted to the truth's optima, lands near the truth
    for p in proposals:
        if p.reason == "law:saturating":
            assert 1 / 1.5 < p.lr / saturating_optimum(p.batch_size) < 1.5


def test_a_batch_past_its_search_never_goes_back() -> None:
    sweep = plan(base_lr=0.1, seeds=3)
    _, proposals, _ = run_plan(sweep, saturating_optimum, noise=0.3)
    for batch in BATCHES:
        reasons = [p.reason for p in proposals if p.batch_size == batch]
        first_replicate = reasons.index("replicate")
        assert not any(r.startswith(("rule:", "law:")) for r in reasons[first_replicate:]), batch


def test_replicates_best_points_with_every_seed_and_finds_pooled_optimum() -> None:
    sweep = plan(base_lr=0.1, seeds=3)
    observations, proposals, finished = run_plan(sweep, saturating_optimum, noise=0.02)
    assert finished.why == "complete"
    for batch, state in sweep.states(observations).items():
        at_best = {o.seed for o in observations if o.batch_size == batch and o.lr == state.best_lr}
        assert at_best == {0, 1, 2}
        assert 1 / 1.5 <= state.best_lr / saturating_optimum(batch) <= 1.5
    # all batch sizes are searched before any replicate
    first_replicate = next(i for i, p in enumerate(proposals) if p.reason == "replicate")
    assert all(p.reason != "replicate" for p in proposals[:first_replicate])
    assert all(p.seed == 0 for p in proposals[:first_replicate])


def test_more_seeds_only_where_trial_noise_leaves_the_optimum_loose() -> None:
    # trial noise large against the curvature at B = 512 only: 3 seeds leave its optimum loose
    sweep = plan(base_lr=0.1, seeds=3, max_seeds=8, tolerance=1.4)
    observations, proposals, finished = run_plan(
        sweep, saturating_optimum, noise=lambda b: 0.3 if b == 512 else 0.003
    )
    assert finished.why == "complete" and not sweep.shortfalls(observations)
    seeds = {b: len({o.seed for o in observations if o.batch_size == b}) for b in BATCHES}
    assert 3 < seeds[512] <= 8
    assert all(seeds[b] == 3 for b in BATCHES if b != 512), seeds
    # every batch size is replicated with 3 seeds before any gets a fourth
    first_extra = next(i for i, p in enumerate(proposals) if p.seed >= 3)
    assert {(p.batch_size, p.seed) for p in proposals[:first_extra] if p.seed == 2} == {
        (b, 2) for b in BATCHES
    }
    # an added seed trains the best point and its neighbours, like the others
    state = sweep.states(observations)[512]
    assert state.phase == "done"
    at_best = {o.seed for o in observations if o.batch_size == 512 and o.lr == state.best_lr}
    assert at_best == set(range(seeds[512]))
    # without max_seeds: 3 seeds everywhere
    plain, _, _ = run_plan(
        plan(base_lr=0.1, seeds=3, tolerance=1.4),
        saturating_optimum,
        noise=lambda b: 0.3 if b == 512 else 0.003,
    )
    assert {o.seed for o in plain} == {0, 1, 2}


def test_diverged_runs_count_as_worst_and_bound_the_bracket() -> None:
    # Stability edge just above the optimum: everything above 1.2× optimum diverges.
    sweep = plan(base_lr=1.0)
    observations, _, finished = run_plan(
        sweep, saturating_optimum, edge=lambda b: 1.2 * saturating_optimum(b)
    )
    assert finished.why == "complete"
    assert any(o.diverged for o in observations)
    for batch, state in sweep.states(observations).items():
        assert not math.isinf(state.best_value)
        assert 1 / 1.5 <= state.best_lr / saturating_optimum(batch) <= 1.5


def test_optimum_beyond_the_lr_bound_is_reported_unbracketed() -> None:
    sweep = plan(base_lr=1e-3, lr_min=1e-3, batch_sizes=(32,))
    observations, _, finished = run_plan(sweep, lambda b: 1e-5)
    state = sweep.states(observations)[32]
    assert finished.why == "complete" and state.phase == "done"
    assert state.best_lr == pytest.approx(1e-3) and not state.bracketed


@pytest.mark.parametrize("noise", [0.05, 0.3])
def test_pinned_holds_for_the_seed_pooled_optimum(noise: float) -> None:
    # With noisy seeds the pooled best can move off the first seed's; it is pinned again.
    sweep = plan(seeds=3, tolerance=1.4)
    for trial in range(5):
        rng_noise = noise * (1 + trial / 10)
        observations, _, finished = run_plan(sweep, saturating_optimum, noise=rng_noise)
        assert finished.why == "complete"
        for batch, state in sweep.states(observations).items():
            lrs = sorted({o.lr for o in observations if o.batch_size == batch and o.seed == 0})
            i = lrs.index(state.best_lr)
            assert 0 < i < len(lrs) - 1
            assert lrs[i] / lrs[i - 1] <= 1.4 + 1e-9 and lrs[i + 1] / lrs[i] <= 1.4 + 1e-9
            seeds = {
                o.seed for o in observations if o.batch_size == batch and o.lr in lrs[i - 1 : i + 2]
            }
            assert seeds == {0, 1, 2}


def test_diverged_runs_are_worst_when_maximizing_too() -> None:
    sweep = plan(base_lr=1.0, minimize=False)
    observations, _, finished = run_plan(
        sweep, saturating_optimum, edge=lambda b: 1.2 * saturating_optimum(b)
    )
    assert finished.why == "complete" and any(o.diverged for o in observations)
    for batch, state in sweep.states(observations).items():
        assert math.isfinite(state.best_value)
        assert not any(
            o.diverged for o in observations if o.batch_size == batch and o.lr == state.best_lr
        )


def test_bounds_closer_than_the_base_grid_still_give_a_seed_point() -> None:
    sweep = plan(lr_min=0.04, lr_max=0.05, batch_sizes=(32,))
    first = sweep.next([])
    assert isinstance(first, Proposal) and 0.04 <= first.lr <= 0.05


def test_maximize_direction() -> None:
    sweep = plan(base_lr=0.05, minimize=False, batch_sizes=(32, 128))
    observations, _, _ = run_plan(sweep, saturating_optimum)
    for batch, state in sweep.states(observations).items():
        assert 1 / 1.5 <= state.best_lr / saturating_optimum(batch) <= 1.5


def test_budget_ends_the_sweep() -> None:
    sweep = plan(max_trials=7)
    observations, _, finished = run_plan(sweep, saturating_optimum)
    assert finished.why == "budget" and len(observations) == 7


def test_running_trials_are_not_proposed_again_and_block_dependent_steps() -> None:
    sweep = plan(base_lr=0.1, batch_sizes=(32,))
    first = sweep.next([])
    assert isinstance(first, Proposal) and first.reason.startswith("rule:")
    running = [Observation(32, first.lr, 0, None)]
    assert sweep.next(running) == WAIT  # bracketing needs the running result
    other = plan(base_lr=0.1, batch_sizes=(32, 64))
    second = other.next([Observation(32, 0.1, 0, None)])
    assert isinstance(second, Proposal) and second.batch_size == 64


def test_a_worker_that_would_wait_replicates_early_the_best_point_of_a_refining_search() -> None:
    sweep = plan(base_lr=0.1, batch_sizes=(32,), seeds=3, tolerance=1.3)

    def value(lr: float) -> float:
        return math.log(lr / 0.12) ** 2 + 1.0

    done: list[Observation] = []
    while True:  # one worker until the search refines
        step = sweep.next(done)
        assert isinstance(step, Proposal)
        if step.reason == "refine":
            break
        done.append(Observation(32, step.lr, 0, value(step.lr), reason=step.reason))
    best = sweep.states(done)[32].best_lr
    running = [*done, Observation(32, step.lr, 0, None, reason="refine")]
    early = [sweep.next(running)]
    running.append(Observation(32, early[0].lr, early[0].seed, None, reason="replicate"))
    early.append(sweep.next(running))
    running.append(Observation(32, early[1].lr, early[1].seed, None, reason="replicate"))
    assert early == [Proposal(32, best, 1, "replicate"), Proposal(32, best, 2, "replicate")]
    assert sweep.next(running) == WAIT  # every seed of the best point is taken

    # The same search with one worker never gets there, and ends with the same optimum;
    # once the search ends, the replicate pass does not train the early points again.
    one, proposals, _ = run_plan(sweep, lambda batch: 0.12)
    assert not any(p.seed > 0 and p.reason == "replicate" for p in proposals[: len(done) + 1])
    finished = [o for o in running if o.value is not None]
    finished += [Observation(32, o.lr, o.seed, value(o.lr), reason=o.reason)
                 for o in running if o.value is None]  # fmt: skip
    while isinstance(step := sweep.next(finished), Proposal):
        assert (step.lr, step.seed) not in {(o.lr, o.seed) for o in finished}
        finished.append(Observation(32, step.lr, step.seed, value(step.lr), reason=step.reason))
    assert step == Finished("complete")
    assert sweep.states(finished)[32].best_lr == sweep.states(one)[32].best_lr


def test_no_early_replicate_while_a_search_is_still_seeding_or_bracketing() -> None:
    sweep = plan(base_lr=0.1, batch_sizes=(32,), seeds=3)
    rules = [Observation(32, lr, 0, None, reason="rule:x") for lr in (0.1, 0.2, 0.4)]
    assert sweep.next(rules) == WAIT
    tried = [Observation(32, lr, 0, 1.0 + lr, reason="rule:x") for lr in (0.1, 0.2, 0.4)]
    bracketing = [*tried, Observation(32, 0.025, 0, None, reason="bracket")]
    assert sweep.next(bracketing) == WAIT  # the best (at the edge) is about to move


def test_no_trial_at_or_above_an_lr_that_diverged_at_this_or_a_larger_batch() -> None:
    # Rules anchored 8x too high: at B=16 every rule lies above the edge measured at B0 = 32.
    sweep = plan(base_lr=8 * saturating_optimum(32), seeds=3)
    edge = lambda b: 1.2 * saturating_optimum(b)  # noqa: E731
    observations, proposals, finished = run_plan(sweep, saturating_optimum, 0.05, edge)
    assert finished.why == "complete"  # (run_plan checks every proposal against the edge)
    at_16 = [p for p in proposals if p.batch_size == 16]
    assert not any(p.reason.startswith("rule:") for p in at_16)  # every rule seed skipped
    for batch, state in sweep.states(observations).items():
        assert 1 / 1.5 <= state.best_lr / saturating_optimum(batch) <= 1.5, batch
        assert state.bracketed and not sweep.shortfalls(observations)
    # a neighbour of the best that diverged with the first seed is never replicated
    first = {(o.batch_size, o.lr) for o in observations if o.seed == 0 and o.diverged}
    assert not [p for p in proposals if p.seed > 0 and (p.batch_size, p.lr) in first]


def test_bracketing_up_stops_at_an_edge_measured_at_a_larger_batch() -> None:
    sweep = plan(base_lr=0.1, batch_sizes=(32, 64), base_batch=64, tolerance=1.5)
    done = [  # B0 = 64 is pinned at 0.1; 0.2 diverged there
        *(Observation(64, lr, 0, v, reason="x") for lr, v in ((0.08, 1.1), (0.1, 1), (0.12, 1.1))),
        Observation(64, 0.2, 0, math.inf, diverged=True, reason="bracket"),
        *(Observation(32, lr, 0, v, reason="rule:x") for lr, v in ((0.05, 2), (0.0707, 1.7))),
        Observation(32, 0.1, 0, 1.5, reason="rule:constant"),
    ]
    # the best at 32 is the highest lr tried there; the next step up (0.4) would diverge
    step = sweep.next(done)
    assert step == Proposal(32, pytest.approx(math.sqrt(0.1 * 0.2)), 0, "refine")
    done.append(Observation(32, step.lr, 0, 1.2, reason="refine"))
    state = sweep.states(done)[32]
    assert state.phase == "done" and state.bracketed and state.best_lr == step.lr
    assert state.edge == 0.2 and sweep.diverges(done, 32, 0.2)
    assert not sweep.diverges(done, 128, 0.2)  # a larger batch size is not bounded by it
    assert sweep.next(done) == Finished("complete") and sweep.shortfalls(done) == []


def test_every_trial_diverging_ends_the_sweep() -> None:
    # lr_min above the edge everywhere: every rule is clipped to lr_min and diverges.
    sweep = plan(base_lr=0.1, lr_min=10.0, seeds=3)
    observations, proposals, finished = run_plan(sweep, saturating_optimum, edge=lambda b: 1.0)
    assert finished.why == "complete"
    # one trial at B0 and at each larger batch size; B=16 is bounded by B0's, no replicates
    assert sorted(p.batch_size for p in proposals) == [32, 64, 128, 256, 512]
    shortfalls = sweep.shortfalls(observations)
    assert [(s.batch_size, s.why) for s in shortfalls] == [(b, "diverged") for b in BATCHES]
    # with the bounds wide, every batch size brackets down to lr_min and still terminates
    wide = plan(base_lr=0.1, seeds=2)
    observations, _, finished = run_plan(wide, saturating_optimum, edge=lambda b: 0.0)
    assert finished.why == "complete"
    assert {s.why for s in wide.shortfalls(observations)} == {"diverged"}


def test_the_plan_terminates_with_several_workers_finishing_in_any_order() -> None:
    edge = lambda b: 1.2 * saturating_optimum(b)  # noqa: E731
    for trial in range(5):
        rng = np.random.default_rng(trial)
        sweep = plan(base_lr=float(rng.choice([0.01, 0.1, 1.0])), seeds=2)
        observations: list[Observation] = []
        for _ in range(1000):
            decision = sweep.next(observations)
            running = [i for i, o in enumerate(observations) if o.value is None]
            if isinstance(decision, Finished):
                break
            if isinstance(decision, Proposal) and len(running) < 3:
                assert_not_known_to_diverge(decision, observations)
                where = (decision.batch_size, decision.lr, decision.seed)
                observations.append(Observation(*where, None, reason=decision.reason))
                continue
            assert running, decision  # waiting needs a running trial
            i = int(rng.choice(running))
            o = observations[i]
            value = math.log(o.lr / saturating_optimum(o.batch_size)) ** 2 + rng.normal(0, 0.05)
            diverged = o.lr > edge(o.batch_size)
            observations[i] = Observation(
                o.batch_size, o.lr, o.seed, math.inf if diverged else value, diverged, o.reason
            )
        assert isinstance(decision, Finished), "the plan never finished"


def test_shortfalls_name_each_batch_size_without_a_real_optimum() -> None:
    at_bound = plan(base_lr=1e-3, lr_min=1e-3, batch_sizes=(32,))
    observations, _, _ = run_plan(at_bound, lambda b: 1e-5)
    assert at_bound.shortfalls(observations) == [Shortfall(32, "at_lr_min", pytest.approx(1e-3))]

    # the trial budget spent early: B0 not bracketed yet, the other batch sizes never tried
    short = plan(base_lr=0.01, max_trials=2)
    observations, _, finished = run_plan(short, saturating_optimum)
    assert finished.why == "budget"
    found = {(s.batch_size, s.why) for s in short.shortfalls(observations)}
    assert found == {(32, "above"), *((b, "untried") for b in BATCHES if b != 32)}

    # a target budget whose target no run reaches: worst everywhere, yet no divergence
    target = plan(base_lr=0.1, batch_sizes=(32,))
    missed: list[Observation] = []
    while isinstance(step := target.next(missed), Proposal):
        where = (step.batch_size, step.lr, step.seed)
        missed.append(Observation(*where, math.inf, reason=step.reason, reached_target=False))
    assert step == Finished("complete")
    assert target.shortfalls(missed) == [Shortfall(32, "missed_target")]
    assert not any(target.diverges(missed, 32, o.lr) for o in missed)


def run_packs(
    plan: SweepPlan, optimum: Callable[[int], float], edge: Callable[[int], float] | None = None
) -> tuple[list[Observation], list[tuple[Proposal, ...]]]:
    """As :func:`run_plan`, a pack at a time (every member evaluated, then the next pack)."""
    observations: list[Observation] = []
    packs: list[tuple[Proposal, ...]] = []
    while True:
        decision = plan.next_pack(observations)
        if isinstance(decision, Finished):
            return observations, packs
        assert isinstance(decision, tuple), decision
        packs.append(decision)
        for member in decision:  # (decided together, before any of them ran)
            assert_not_known_to_diverge(member, observations)
        for member in decision:
            b, lr = member.batch_size, member.lr
            diverged = edge is not None and lr > edge(b)
            value = math.log(lr / optimum(b)) ** 2 + 1.0
            observations.append(Observation(b, lr, member.seed, value, diverged, member.reason))


def packed(size: int, **overrides) -> SweepPlan:
    return plan(pack=tuple((b, size) for b in BATCHES), **overrides)


def test_a_pack_of_one_is_the_plan_one_trial_at_a_time() -> None:
    one, _, _ = run_plan(plan(seeds=2), saturating_optimum)
    packs_of_one, packs = run_packs(packed(1, seeds=2), saturating_optimum)
    assert packs_of_one == one and {len(p) for p in packs} == {1}


@pytest.mark.parametrize("size", [2, 4, 8])
def test_packs_share_batch_and_seed_and_pin_every_optimum_in_fewer_rounds(size: int) -> None:
    edge = lambda b: 20 * saturating_optimum(b)  # noqa: E731
    one, _, _ = run_plan(plan(seeds=2), saturating_optimum, edge=edge)
    observations, packs = run_packs(packed(size, seeds=2), saturating_optimum, edge=edge)
    for pack in packs:
        assert 1 <= len(pack) <= size
        assert len({(p.batch_size, p.seed) for p in pack}) == 1, pack  # one pass over the data
    points = [(o.batch_size, o.seed, round(math.log(o.lr), 6)) for o in observations]
    assert len(points) == len(set(points)), "a point trained twice"
    final = packed(size, seeds=2).states(observations)
    for batch, state in final.items():
        assert state.phase == "done"
        assert state.best_lr is not None
        assert abs(math.log(state.best_lr / saturating_optimum(batch))) <= math.log(1.5), batch
    # trained together, the plan needs fewer passes than one trial at a time...
    assert len(packs) < 0.8 * len(one)
    # ...for a bounded number of extra trials
    assert len(observations) <= 2.5 * len(one)


def test_a_refining_pack_spreads_its_points_over_both_gaps() -> None:
    """Best 0.1 between 0.01 and 1 (both gaps ×10): three points go where they narrow the
    widest part most: two into the low gap (tie: low first), one into the high gap."""
    tried = [
        Observation(32, lr, 0, math.log(lr / 0.1) ** 2, reason="rule") for lr in (0.01, 0.1, 1)
    ]
    pack = packed(3, base_lr=0.1, rules=("constant",), laws=()).next_pack(tried)
    assert isinstance(pack, tuple)
    assert [p.reason for p in pack] == ["refine"] * 3
    assert sorted(p.lr for p in pack) == pytest.approx(
        [0.01 * 10 ** (1 / 3), 0.01 * 10 ** (2 / 3), 0.1**0.5]
    )
    assert {(p.batch_size, p.seed) for p in pack} == {(32, 0)}


def test_a_bracketing_pack_steps_outward_several_factors_at_once() -> None:
    tried = [Observation(32, lr, 0, -math.log(lr), reason="rule") for lr in (0.01, 0.1)]
    pack = packed(3, base_lr=0.01, rules=("constant", "linear"), laws=(), lr_max=5.0).next_pack(
        tried
    )
    assert isinstance(pack, tuple)
    assert [p.reason for p in pack] == ["bracket"] * 3
    assert [p.lr for p in pack] == pytest.approx([0.4, 1.6, 5.0])  # ×4, ×16, then lr_max


def test_a_seeding_pack_adds_bracket_steps_on_both_sides_of_the_rules() -> None:
    pack = packed(4, base_lr=0.1, rules=("constant", "linear"), laws=()).next_pack([])
    assert isinstance(pack, tuple)
    assert [p.reason for p in pack] == ["rule:constant+linear"] + ["bracket"] * 3
    assert [p.lr for p in pack] == pytest.approx([0.1, 0.025, 0.4, 0.00625])
