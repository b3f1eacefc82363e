"""The numbers lrbatch answers with: the scaling rules, the laws fitted across batch sizes,
the optimum of each batch size, the stability edge, the verdict, predictions, the gradient
noise scale's estimator and the theory test (docs/science.md).

Pure numerics: numpy and scipy, no torch, Optuna or Lightning (tests/test_imports.py).
"""

from typing import TYPE_CHECKING

from lrbatch._exports import lazy_exports

if TYPE_CHECKING:
    from lrbatch.science.analysis import CriticalBatch, RuleRegret, critical_batch, rule_regrets
    from lrbatch.science.edge import EdgeEstimate, EdgeFit, edge_at, fit_edge
    from lrbatch.science.judge import SurgeEvidence, Verdict, surge_evidence, verdict
    from lrbatch.science.lawfit import LawFit, fit_laws
    from lrbatch.science.laws import LAWS, fit_law
    from lrbatch.science.noise import (
        CURVE_POINTS,
        MEASURED_FRACTION,
        POINTS,
        WINDOW_STEPS,
        GradientPair,
        NoiseEstimate,
        NoiseRecord,
        combine,
        gradient_pair,
        piece_sizes,
        sgd_optimum,
        window_steps,
    )
    from lrbatch.science.optima import (
        BEST_POINT,
        LOCAL,
        BatchOptimum,
        TrialPoint,
        analyse_batch,
        batch_optima,
        group_levels,
    )
    from lrbatch.science.prediction import Prediction, predict_at
    from lrbatch.science.rules import (
        ANCHORED_RULES,
        LAW_RULES,
        MEASURED,
        RULE_NAMES,
        anchored,
        constant,
        linear,
        measured,
        power_law,
        predict,
        saturating,
        square_root,
        surge,
        surge_shape,
    )
    from lrbatch.science.theory import (
        NEAR,
        Comparison,
        MeasuredNoise,
        NoisePoint,
        compare,
        fieller,
        measured_noise,
        theory_text,
    )
else:
    __getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "ANCHORED_RULES",
    "BEST_POINT",
    "CURVE_POINTS",
    "LAWS",
    "LAW_RULES",
    "LOCAL",
    "MEASURED",
    "MEASURED_FRACTION",
    "NEAR",
    "POINTS",
    "RULE_NAMES",
    "WINDOW_STEPS",
    "BatchOptimum",
    "Comparison",
    "CriticalBatch",
    "EdgeEstimate",
    "EdgeFit",
    "GradientPair",
    "LawFit",
    "MeasuredNoise",
    "NoiseEstimate",
    "NoisePoint",
    "NoiseRecord",
    "Prediction",
    "RuleRegret",
    "SurgeEvidence",
    "TrialPoint",
    "Verdict",
    "analyse_batch",
    "anchored",
    "batch_optima",
    "combine",
    "compare",
    "constant",
    "critical_batch",
    "edge_at",
    "fieller",
    "fit_edge",
    "fit_law",
    "fit_laws",
    "gradient_pair",
    "group_levels",
    "linear",
    "measured",
    "measured_noise",
    "piece_sizes",
    "power_law",
    "predict",
    "predict_at",
    "rule_regrets",
    "saturating",
    "sgd_optimum",
    "square_root",
    "surge",
    "surge_evidence",
    "surge_shape",
    "theory_text",
    "verdict",
    "window_steps",
]
