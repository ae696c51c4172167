"""Perturbation methods of §6: occlusion (§6.2), LIME (§6.1), prediction difference analysis (§6.4), anchors (§6.5).

They switch features of the input off (a :mod:`xaicore.features` adapter) and score the perturbed copies with the
forward-pass engine (:mod:`xaicore.engine`), all samples of a batch at once.
"""

from xaicore.explain.perturbation import anchors as _anchors  # noqa: F401  (registers)
from xaicore.explain.perturbation import lime as _lime  # noqa: F401  (registers)
from xaicore.explain.perturbation import occlusion as _occlusion  # noqa: F401  (registers)
from xaicore.explain.perturbation import pda as _pda  # noqa: F401  (registers)
from xaicore.explain.perturbation.lime import lime_surrogate
from xaicore.explain.perturbation.pda import PatchGaussian, fit_patch_gaussian
from xaicore.features.fills import FILLS, fill_for

__all__ = ["FILLS", "PatchGaussian", "fill_for", "fit_patch_gaussian", "lime_surrogate"]
