"""Perturbation methods of §6: occlusion (§6.2), LIME (§6.1), prediction difference analysis (§6.4), anchors (§6.5).

They switch features of the input off (a :mod:`xaicore.features` adapter) and score the perturbed copies with the
forward-pass engine (:mod:`xaicore.engine`), all samples of a batch at once.

Every module of this package is imported here, in name order, so its ``@register`` runs: a new perturbation
method is one file here (and its reference test), nothing else to edit (docs/architecture.md).
"""

import importlib
import pkgutil

from xaicore.explain.perturbation.lime import lime_surrogate
from xaicore.explain.perturbation.pda import PatchGaussian, fit_patch_gaussian
from xaicore.features.fills import FILLS, fill_for

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["FILLS", "PatchGaussian", "fill_for", "fit_patch_gaussian", "lime_surrogate"]
