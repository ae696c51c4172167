"""Metrics of the survey (§4.3–4.5): batched, stateless functions over tensors."""

from xaicore.metrics.aopc import AOPCResult, aopc
from xaicore.metrics.axioms import conservation_error, positive_fraction
from xaicore.metrics.perturbation import PERTURBATIONS, replacement_values
from xaicore.metrics.sanity import SIMILARITY_MEASURES, similarity, spearman_rows

#: which way is better, for reports: +1 higher is better, -1 lower is better.
DIRECTIONS = {"aopc_morf": +1, "aopc_lerf": -1, "conservation_error": -1}

__all__ = [
    "AOPCResult",
    "DIRECTIONS",
    "PERTURBATIONS",
    "SIMILARITY_MEASURES",
    "aopc",
    "conservation_error",
    "positive_fraction",
    "replacement_values",
    "similarity",
    "spearman_rows",
]
