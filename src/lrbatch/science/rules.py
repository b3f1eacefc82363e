"""Learning-rate scaling rules: what each published rule predicts at a new batch size.

Every function here is pure: numbers in, numbers out. Batch sizes are *effective* batches
(micro-batch × accumulation × replicas), learning rates are per optimizer step. Formulas and
sources are collected in docs/science.md, *Rules*; each function cites the paper it implements.

Two families:

* anchored rules, ``rule(batch, base_batch, base_lr)``: scale a known-good point (B0, η0);
* laws with their own parameters, ``law(batch, lr_max, b_noise)``: what a fit across batch
  sizes returns (saturating and surge); :func:`anchored` turns one into an anchored rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

__all__ = [
    "ANCHORED_RULES",
    "LAW_RULES",
    "MEASURED",
    "RULE_NAMES",
    "anchored",
    "constant",
    "linear",
    "measured",
    "power_law",
    "predict",
    "saturating",
    "square_root",
    "surge",
    "surge_shape",
]

AnchoredRule = Callable[[float, float, float], float]


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def constant(batch: float, base_batch: float, base_lr: float) -> float:
    """The null rule: keep the learning rate, whatever the batch."""
    _check_positive(batch=batch, base_batch=base_batch, base_lr=base_lr)
    return base_lr


def linear(batch: float, base_batch: float, base_lr: float) -> float:
    """η0 · B/B0 (Goyal et al. 2017, *Accurate, Large Minibatch SGD*, arXiv:1706.02677)."""
    _check_positive(batch=batch, base_batch=base_batch, base_lr=base_lr)
    return base_lr * batch / base_batch


def square_root(batch: float, base_batch: float, base_lr: float) -> float:
    """η0 · √(B/B0) (Krizhevsky 2014, arXiv:1404.5997; Hoffer et al. 2017, arXiv:1705.08741;
    for Adam, Malladi et al. 2022, arXiv:2205.10287, whose full rule also scales β1, β2 and ε:
    this function scales the learning rate only)."""
    _check_positive(batch=batch, base_batch=base_batch, base_lr=base_lr)
    return base_lr * math.sqrt(batch / base_batch)


def power_law(batch: float, base_batch: float, base_lr: float, alpha: float) -> float:
    """η0 · (B/B0)^α, the free-exponent generalisation of linear (α=1) and square root (α=½)."""
    _check_positive(batch=batch, base_batch=base_batch, base_lr=base_lr)
    return base_lr * (batch / base_batch) ** alpha


def saturating(batch: float, lr_max: float, b_noise: float) -> float:
    """η_max / (1 + B_noise/B) (McCandlish et al. 2018, arXiv:1812.06162).

    About linear in B for B ≪ B_noise, flat at η_max for B ≫ B_noise. Derived for SGD.
    """
    _check_positive(batch=batch, lr_max=lr_max, b_noise=b_noise)
    return lr_max / (1.0 + b_noise / batch)


def surge_shape(batch: float, b_peak: float) -> float:
    """The surge's shape relative to its peak: 1 / (½(√(B_peak/B) + √(B/B_peak)))."""
    _check_positive(batch=batch, b_peak=b_peak)
    ratio = math.sqrt(batch / b_peak)
    return 1.0 / (0.5 * (1.0 / ratio + ratio))


def surge(batch: float, lr_max: float, b_peak: float) -> float:
    """η_max / (½(√(B_peak/B) + √(B/B_peak))) (Li et al. 2024, *Surge Phenomenon in Optimal
    Learning Rate and Batch Size Scaling*, arXiv:2405.14578).

    For Adam and sign-like optimizers: the optimum rises, peaks at B_peak (= B_noise), then
    falls like 1/√B.
    """
    _check_positive(lr_max=lr_max)
    return lr_max * surge_shape(batch, b_peak)


LAW_RULES: dict[str, Callable[[float, float, float], float]] = {
    "saturating": saturating,
    "surge": surge,
}


def anchored(law: str, b_noise: float) -> AnchoredRule:
    """Turn a two-parameter law into a rule anchored at (B0, η0), for a known B_noise.

    The law's η_max is chosen so that the curve passes through the base point.

    Args:
        law: ``"saturating"`` or ``"surge"``.
        b_noise: the law's batch scale (B_noise for saturating, B_peak for surge), in samples.

    Returns:
        A rule ``(batch, base_batch, base_lr) -> lr``.
    """
    shape = LAW_RULES[law]
    _check_positive(b_noise=b_noise)

    def rule(batch: float, base_batch: float, base_lr: float) -> float:
        _check_positive(base_lr=base_lr)
        return base_lr * shape(batch, 1.0, b_noise) / shape(base_batch, 1.0, b_noise)

    rule.__name__ = f"{law}_anchored"
    return rule


ANCHORED_RULES: dict[str, AnchoredRule] = {
    "constant": constant,
    "linear": linear,
    "square_root": square_root,
}
MEASURED = "measured"  # ε_max / (1 + B_noise/B) from `lrbatch noise-scale`: no anchor
RULE_NAMES = (*ANCHORED_RULES, "saturating", "surge", MEASURED)


def measured(batch: float, b_noise: float | None, eps_max: float | None) -> float | None:
    """The ``measured`` rule: McCandlish et al.'s SGD optimum ε_max / (1 + B_noise/B) from
    measured ε_max and B_noise (≈ B_simple), not anchored at a base point; None without both."""
    if b_noise is None or eps_max is None:
        return None
    return saturating(batch, eps_max, b_noise)


def predict(
    base_lr: float,
    base_batch: float,
    batch: float,
    rules: Sequence[str] = RULE_NAMES,
    b_noise: float | None = None,
    eps_max: float | None = None,
) -> dict[str, float]:
    """Each rule's learning rate at ``batch``, anchored at (``base_batch``, ``base_lr``).

    ``measured`` is not anchored: it is McCandlish et al.'s SGD optimum from measurement alone,
    ε_max / (1 + B_noise/B), with ε_max and B_noise (≈ B_simple) from ``lrbatch noise-scale``.

    Args:
        base_lr: η0, the learning rate known (or found) best at ``base_batch``.
        base_batch: B0, effective batch size of the base point.
        batch: effective batch size to predict for.
        rules: names from :data:`RULE_NAMES`. ``saturating`` and ``surge`` need ``b_noise``
            and are skipped without it.
        b_noise: B_noise (saturating, measured) or B_peak (surge), in samples.
        eps_max: ε_max, the best step along the full-batch gradient (measured); ``measured``
            is skipped without it and ``b_noise``.

    Returns:
        ``{rule name: predicted learning rate}``, in the order of ``rules``.

    Raises:
        ValueError: an unknown rule name or a non-positive number.
    """
    predictions: dict[str, float] = {}
    for name in rules:
        if name in ANCHORED_RULES:
            predictions[name] = ANCHORED_RULES[name](batch, base_batch, base_lr)
        elif name in LAW_RULES:
            if b_noise is not None:
                predictions[name] = anchored(name, b_noise)(batch, base_batch, base_lr)
        elif name == MEASURED:
            if (lr := measured(batch, b_noise, eps_max)) is not None:
                predictions[name] = lr
        else:
            raise ValueError(f"unknown rule {name!r}; accepted: {', '.join(RULE_NAMES)}")
    return predictions
