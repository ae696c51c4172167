"""LIME (Ribeiro et al. 2016; survey §6.1): a weighted linear surrogate over superpixels, columns or tokens.

Per sample, ``n_samples`` binary masks z ∈ {0, 1}^F over its F superpixels (row 0 all ones, the rest uniform
draws from (seed, sample content), as ``lime``'s image explainer), the target's score of each masked image, the
weights π(z) = sqrt(exp(−d(z, 1)² / kernel_width²)) of the cosine distance d to the unmasked image, and the
weighted ridge regression (alpha, with intercept) of the scores on z, solved in closed form for the whole batch
at once. The coefficients, spread over the superpixels, are the heatmap; the surrogate's weighted R² on the
neighbourhood is the extra ``surrogate_r2``.

Tabular rows and text draw their neighbourhoods as ``lime.lime_tabular`` and ``lime.lime_text`` do
(:mod:`xaicore.explain.perturbation.lime_samplers`): the same surrogate, other samples and distances.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from xaicore._rng import sample_generators
from xaicore.engine import FORWARD_BATCH, SCORES, check_forward_batch, packed_scores, perturbed_scores
from xaicore.errors import XaiCoreError
from xaicore.explain.perturbation.lime_samplers import tabular_neighbourhood, text_neighbourhood
from xaicore.explain.registry import Explanation, register
from xaicore.features import ColumnStats, features_for, input_kind, user_segments
from xaicore.features.fills import SEGMENT_FILLS, fill_for

_STREAM = 4


def lime_masks(x: torch.Tensor, counts: torch.Tensor, n_features: int, n_samples: int, seed: int) -> torch.Tensor:
    """(B, n_samples, F) boolean masks: row 0 all ones, the others uniform on {0, 1} per real feature, drawn per
    sample from (seed, sample content); features past a sample's count are False (they are empty)."""
    out = np.zeros((x.shape[0], n_samples, n_features), dtype=bool)
    for i, g in enumerate(sample_generators(x, seed, _STREAM)):
        f = int(counts[i])
        out[i, :, :f] = g.integers(0, 2, size=(n_samples, f), dtype=np.int8).astype(bool)
        out[i, 0, :f] = True
    return torch.from_numpy(out).to(x.device)


def kernel_weights(z: torch.Tensor, counts: torch.Tensor, kernel_width: float, *, distance: str = "cosine",
                   scale: float = 1.0) -> torch.Tensor:
    """(B, N) sqrt(exp(−d²/w²)) of the distance d of each mask row to the all-ones row: ``scale`` × the cosine
    distance (scikit-learn's: an all-zero row is at distance 1) or the Euclidean one (√ of the zeros)."""
    zf = z.to(torch.float64)
    dot = zf.sum(2)  # z · 1
    if distance == "euclidean":
        d = (counts.to(torch.float64)[:, None] - dot).clamp_min(0).sqrt()
    else:
        norm = zf.square().sum(2).sqrt() * counts.to(torch.float64).sqrt()[:, None]
        d = scale * (1.0 - torch.where(norm > 0, dot / norm.clamp_min(1e-300), torch.zeros_like(dot)))
    return torch.sqrt(torch.exp(-(d * d) / float(kernel_width) ** 2))


def weighted_ridge(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float,
                   active: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched weighted ridge with intercept, min Σ_n w_n (y_n − b − z_n·β)² + α‖β‖² (scikit-learn's ``Ridge``
    with ``sample_weight``): (coef (B, F), intercept (B,), weighted R² (B,)), float64. ``active`` (B, F) limits
    the regression to those features (the others get 0)."""
    z, y, w = z.to(torch.float64), y.to(torch.float64), w.to(torch.float64)
    if active is not None:
        z = z * active[:, None, :].to(torch.float64)
    sw = w.sum(1, keepdim=True)
    zm = (w[..., None] * z).sum(1, keepdim=True) / sw[..., None]
    ym = (w * y).sum(1, keepdim=True) / sw
    zc, yc = z - zm, y - ym
    a = zc.transpose(1, 2) @ (w[..., None] * zc)
    a = a + float(alpha) * torch.eye(z.shape[2], dtype=torch.float64, device=z.device)
    coef = torch.linalg.solve(a, (zc.transpose(1, 2) @ (w * yc)[..., None]))[..., 0]
    intercept = ym[:, 0] - (zm[:, 0] * coef).sum(1)
    pred = intercept[:, None] + (z @ coef[..., None])[..., 0]
    ss_res = (w * (y - pred).square()).sum(1)
    ss_tot = (w * yc.square()).sum(1)
    r2 = torch.where(ss_tot > 0, 1.0 - ss_res / ss_tot.clamp_min(1e-300),
                     torch.where(ss_res > 0, torch.full_like(ss_res, float("-inf")), torch.ones_like(ss_res)))
    return coef, intercept, r2


def lime_surrogate(z: torch.Tensor, y: torch.Tensor, counts: torch.Tensor, *, kernel_width: float = 0.25,
                   alpha: float = 1.0, n_features: int | None = None, distance: str = "cosine", scale: float = 1.0
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LIME's explanation model for a given neighbourhood: masks ``z`` (B, N, F) and scores ``y`` (B, N) →
    (coef (B, F), intercept (B,), weighted R² (B,)). With ``n_features``, the ``lime`` package's
    ``highest_weights`` selection: a ridge (α = 0.01) on every feature, the top ``n_features`` by |coef| kept
    (stable order), then the surrogate refitted on those. ``distance``/``scale``: see :func:`kernel_weights`."""
    w = kernel_weights(z, counts, kernel_width, distance=distance, scale=scale)
    active = torch.arange(z.shape[2], device=z.device)[None] < counts[:, None]
    if n_features is not None:
        coef0, _, _ = weighted_ridge(z, y, w, 0.01, active)
        order = torch.sort(coef0.abs(), dim=1, descending=True, stable=True).indices[:, :int(n_features)]
        active = torch.zeros_like(active).scatter_(1, order, True) & active
    return weighted_ridge(z, y, w, alpha, active)


@register("lime", family="perturbation", extras=("surrogate_r2",), kinds=("image", "tabular", "text"),
          paper="Ribeiro et al. 2016, eqs. 1-2 (survey §6.1): weighted ridge surrogate over superpixels, "
                    "columns or tokens, pi(z) = sqrt(exp(-d(z, 1)^2 / width^2)) as the lime package's explainers")
def lime(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, features: str = "auto", n_segments: int = 50,
         compactness: float = 0.1, cell: int = 4, n_samples: int = 1000, kernel_width: float | None = None,
         alpha: float = 1.0, n_features: int | None = None, fill: str = "segment_mean",
         reference: torch.Tensor | ColumnStats | None = None, score: str = "probability", seed: int = 0,
         forward_batch: int = FORWARD_BATCH, feature_mask: torch.Tensor | Callable[[np.ndarray], Any] | None = None,
         ) -> Explanation:
    """LIME: ``features`` (``auto``: slic on images, ``columns`` on tabular rows, ``tokens`` on text; images also
    quickshift | grid of side ``cell``) switched off in ``n_samples`` copies per sample — superpixels to ``fill``
    (segment_mean, the lime package's default; zero | mean | blur | uniform), columns redrawn from the training
    statistics ``reference`` (a :class:`ColumnStats`), tokens erased to UNK — relevance = the surrogate's
    coefficient of each feature (of the target's ``score``, the probability as lime). ``kernel_width``: None
    takes lime's default for the kind (0.25 images, 0.75·√F tabular, 25 text). ``feature_mask``: your own
    segmentation of images instead of ``features`` (:func:`xaicore.features.user_segments`: integer labels
    (B, H, W) as Captum's ``feature_mask``, or a callable as lime's ``segmentation_fn``)."""
    if fill not in SEGMENT_FILLS:
        raise XaiCoreError(f"lime: unknown fill {fill!r}; expected one of {', '.join(SEGMENT_FILLS)}")
    if score not in SCORES:
        raise XaiCoreError(f"lime: unknown score {score!r}; expected one of {', '.join(SCORES)}")
    if kernel_width is not None and not float(kernel_width) > 0 or not float(alpha) > 0:
        raise XaiCoreError(f"lime: kernel_width={kernel_width!r} and alpha={alpha!r} must be > 0")
    check_forward_batch(forward_batch, "lime")
    if feature_mask is not None:
        if features != "auto":
            raise XaiCoreError(f"lime: give either features={features!r} or feature_mask, not both")
        feats = user_segments(x, feature_mask)
        values = fill_for(x, fill, features=feats, seed=seed, reference=reference, fills=SEGMENT_FILLS,
                          owner="lime")
    else:
        feats, values = features_for(x, features, image="slic", fill=fill, fills=SEGMENT_FILLS, seed=seed,
                                     reference=reference, n_segments=n_segments, compactness=compactness, cell=cell,
                                     owner="lime")
    kind = input_kind(x)
    distance, scale, width = {"image": ("cosine", 1.0, 0.25), "text": ("cosine", 100.0, 25.0),
                              "tabular": ("euclidean", 1.0, 0.75 * feats.n_features ** 0.5)}[kind]
    f_max = int(feats.counts.max())
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples <= f_max:
        raise XaiCoreError(f"lime: n_samples={n_samples!r} is too small for the surrogate: it must exceed the "
                           f"number of features ({f_max} here); raise n_samples, or use fewer features "
                           "(images: fewer n_segments, a larger grid cell)")
    if n_features is not None and (not isinstance(n_features, int) or not 1 <= n_features <= feats.n_features):
        raise XaiCoreError(f"lime: n_features={n_features!r} must be in 1..{feats.n_features} or None")
    with torch.no_grad():
        if kind == "tabular":
            z, rows = tabular_neighbourhood(x, reference, n_samples, seed)
            y = packed_scores(model, x, target, n_samples, lambda k0, k1: rows[:, k0:k1].transpose(0, 1)
                              .reshape(-1, x.shape[1]), score=score, forward_batch=forward_batch)
        else:
            if kind == "image":
                z = lime_masks(x, feats.counts, feats.n_features, n_samples, seed)
            else:
                z = text_neighbourhood(x, feats.counts, n_samples, seed)
            y = perturbed_scores(model, x, target, feats, z, values, score=score, forward_batch=forward_batch)
    coef, _, r2 = lime_surrogate(z, y, feats.counts, kernel_width=width if kernel_width is None else kernel_width,
                                 alpha=alpha, n_features=n_features, distance=distance, scale=scale)
    rel = feats.spread(coef.to(x.dtype if x.is_floating_point() else torch.float32))
    return Explanation(rel, {"surrogate_r2": r2.float()})
