"""Metrics of the survey (§4.3–4.5): batched, stateless functions over tensors.

Layout follows Quantus' taxonomy: faithfulness (``aopc``, ``faithfulness``, ``roar``), robustness
(``invariance``), randomisation (``sanity``), localisation against a planted ground truth (``localization``),
axioms (``axioms``) and meta-evaluation (``reliability``). AOPC and faithfulness score images, tables and text
alike (regions, columns, tokens).
"""

from xaicore.features.drops import feature_drops
from xaicore.features.fills import PERTURBATIONS, gaussian_blur, replacement_values
from xaicore.metrics.aopc import AOPCResult, aopc
from xaicore.metrics.axioms import conservation_error, positive_fraction
from xaicore.metrics.declarations import DIRECTIONS, METRICS, Metric, metric
from xaicore.metrics.faithfulness import faithfulness, pearson_rows
from xaicore.metrics.invariance import BiasMapConv2d, input_invariance, shifted_network
from xaicore.metrics.localization import MEASURES as LOCALIZATION_MEASURES
from xaicore.metrics.localization import LocalizationResult, localization
from xaicore.metrics.reliability import (
    Correlations,
    inter_method_reliability,
    inter_rater_reliability,
    internal_consistency,
)
from xaicore.metrics.roar import FILLS, Fill, RoarResult, Trainer, degrade, make_fill, roar_cell, roar_kar
from xaicore.metrics.sanity import SIMILARITY_MEASURES, similarity, spearman_rows

__all__ = [
    "AOPCResult",
    "BiasMapConv2d",
    "Correlations",
    "DIRECTIONS",
    "FILLS",
    "LOCALIZATION_MEASURES",
    "LocalizationResult",
    "METRICS",
    "Metric",
    "PERTURBATIONS",
    "SIMILARITY_MEASURES",
    "Fill",
    "RoarResult",
    "Trainer",
    "aopc",
    "conservation_error",
    "degrade",
    "faithfulness",
    "feature_drops",
    "gaussian_blur",
    "input_invariance",
    "inter_method_reliability",
    "inter_rater_reliability",
    "internal_consistency",
    "localization",
    "make_fill",
    "metric",
    "pearson_rows",
    "positive_fraction",
    "replacement_values",
    "roar_cell",
    "roar_kar",
    "shifted_network",
    "similarity",
    "spearman_rows",
]
