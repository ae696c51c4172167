"""Optimisation methods of §6: the contrastive explanations method (CEM, §6.3) and the autoencoder it shares with
activation maximisation's generator prior (:mod:`xaicore.analysis.maximize`)."""

from xaicore.explain.optimisation import cem as _cem  # noqa: F401  (registers)
from xaicore.explain.optimisation.autoencoder import AutoencoderState, ConvAutoencoder, fit_autoencoder
from xaicore.explain.optimisation.cem import CEMResult, cem, soft_threshold, target_margin

__all__ = ["AutoencoderState", "CEMResult", "ConvAutoencoder", "cem", "fit_autoencoder", "soft_threshold",
           "target_margin"]
