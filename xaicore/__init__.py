"""xaicore: the heatmapping methods, metrics and sanity checks of the survey 'Visual Approaches Towards
Interpretability of Neural Networks', batched on torch, with a Zarr archive for the heatmaps.

    >>> from xaicore import explain, methods
    >>> relevance = explain(model, x, target, method="integrated_gradients", n_steps=64)
"""

from xaicore import last_bits as _last_bits
from xaicore._version import __version__
from xaicore.errors import XaiCoreError
from xaicore.explain import Explanation, explain, explanation, fit, methods

_last_bits.install_from_env()

__all__ = ["Explanation", "XaiCoreError", "__version__", "explain", "explanation", "fit", "methods"]
