"""Heatmapping methods behind one verb: ``explain(model, x, target, method=..., **params)``."""

from xaicore.explain import baseline as _baseline  # noqa: F401  (registers)
from xaicore.explain import deeplift as _deeplift  # noqa: F401  (registers)
from xaicore.explain import gradient as _gradient  # noqa: F401  (registers)
from xaicore.explain import lrp as _lrp  # noqa: F401  (registers)
from xaicore.explain import optimisation as _optimisation  # noqa: F401  (registers)
from xaicore.explain import pattern as _pattern  # noqa: F401  (registers)
from xaicore.explain import perturbation as _perturbation  # noqa: F401  (registers)
from xaicore.explain import signal as _signal  # noqa: F401  (registers)
from xaicore.explain import smoothgrad as _smoothgrad  # noqa: F401  (registers)
from xaicore.explain.registry import (
    Explainer,
    Explanation,
    explain,
    explain_batched,
    explanation,
    fit,
    get_explainer,
    methods,
    register,
)
from xaicore.explain.signal_estimators import Patterns, fit_patterns, pattern_quality

__all__ = ["Explainer", "Explanation", "Patterns", "explain", "explain_batched", "explanation", "fit", "fit_patterns",
           "get_explainer", "methods", "pattern_quality", "register"]
