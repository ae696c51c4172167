"""What a removed feature becomes: the one fill vocabulary of the perturbation methods and the removal metrics.

:data:`FILLS` names every fill; each consumer takes the subset that is defined for its features:

* ``zero`` — 0 (methods: occlusion, LIME, anchors);
* ``mean`` — the per-input-variable mean of ``reference`` samples (the pipeline passes the training set).
  Without ``reference`` the batch's own mean is used: a sample's score then depends on the batch around it
  (batched ≠ per-sample), unlike every other fill here;
* ``uniform`` — each input variable of the feature is replaced by a draw of U(low, high) ([0, 1]: the data range);
* ``dirichlet`` — per region and channel, the region's P values are a draw p ~ Dirichlet(1, …, 1) (uniform on
  the simplex) mapped to the data range by its largest component: v_j = low + (high − low) · p_j / max p.
  Since p = E / ΣE for E_j i.i.d. Exp(1), v_j = low + (high − low) · E_j / max E (the sum cancels): every region
  holds one value at ``high`` and the others spread below it (on average 0.32 of the range for P = 16).
  Samek et al. name the distribution but not its parameters or scaling; this is our documented choice;
* ``blur`` — a Gaussian filter, σ = 3 (scipy's ``gaussian_filter``: reflect borders, truncated at 4σ), applied
  to the feature. AOPC's steps are recursive, x⁽ᵏ⁾ = g(x⁽ᵏ⁻¹⁾, r_k): the blur of r_k reads neighbours that earlier
  steps may have blurred already. ``aopc`` runs that exact recursion once per curve, all L steps in order (a
  kernel keeps the vertically filtered image V = Gy·X up to date: about 2·region²·(region + 24) multiply-adds
  per step and channel for σ = 3), so blurring the original image once is *not* used there. It is exact for
  one disabled region (faithfulness, occlusion): there :func:`replacement_values` gives the blurred original;
* ``segment_mean`` — each segment's own mean colour (the ``lime`` package's default; superpixels only).

The removal metrics' g(x, r) (Samek et al. 2017, survey §4.5.1) are :data:`PERTURBATIONS`; occlusion takes
:data:`WINDOW_FILLS`, LIME and anchors :data:`SEGMENT_FILLS`. Tabular columns and text tokens are removed by
their training statistics and UNK (:mod:`xaicore.features.tabular`); ROAR's retraining fills are computed from
the training set per pixel (:mod:`xaicore.metrics.roar`). Noise is drawn per sample from (seed, sample
content), so scores do not depend on batching.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from xaicore._rng import per_sample_exponential, per_sample_uniform
from xaicore.errors import XaiCoreError
from xaicore.features.base import Features, Segments
from xaicore.kernels import get_backend
from xaicore.kernels.numba_kernels import scale_by_region_max

#: every fill (see the module docstring)
FILLS = ("zero", "mean", "blur", "uniform", "dirichlet", "segment_mean")
#: the sample perturbations g(x, r) of the removal metrics (AOPC, faithfulness)
PERTURBATIONS = ("uniform", "dirichlet", "mean", "blur")
#: what an occluded window becomes
WINDOW_FILLS = ("zero", "mean", "blur", "uniform")
#: what a switched-off superpixel becomes (LIME, anchors)
SEGMENT_FILLS = ("zero", "mean", "blur", "uniform", "segment_mean")
BLUR_SIGMA = 3.0
_STREAM = 2
_STREAM_DIRICHLET = 3


@lru_cache(maxsize=32)
def _blur_matrix_np(n: int, sigma: float) -> np.ndarray:
    m = gaussian_filter1d(np.eye(n), sigma, axis=0, mode="reflect", truncate=4.0)
    m.setflags(write=False)
    return m


def blur_matrix(n: int, sigma: float = BLUR_SIGMA, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, n) float64 G with (G @ v) = scipy.ndimage.gaussian_filter1d(v, sigma, mode="reflect")."""
    return torch.from_numpy(_blur_matrix_np(int(n), float(sigma)).copy()).to(device)


def gaussian_blur(x: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Each channel of (B, C, H, W) blurred as scipy.ndimage.gaussian_filter(·, sigma) (float64 inside)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise XaiCoreError(f"blur filters images: x must be (B, C, H, W), got {tuple(getattr(x, 'shape', ()))}")
    if not sigma > 0:
        raise XaiCoreError(f"sigma={sigma!r} must be > 0")
    h, w = x.shape[-2:]
    gy, gx = blur_matrix(h, sigma, x.device), blur_matrix(w, sigma, x.device)
    return (gy @ x.to(torch.float64) @ gx.T).to(x.dtype)


def dirichlet_regions(x: torch.Tensor, region: int, *, seed: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """The ``dirichlet`` replacement of ``x``'s shape: per (sample, channel, region) E/max E, E_j ~ Exp(1)."""
    if x.ndim != 4:
        raise XaiCoreError(f"dirichlet draws per image region: x must be (B, C, H, W), got {tuple(x.shape)}")
    e = per_sample_exponential(x.detach().cpu(), seed, _STREAM_DIRICHLET)  # numpy draws: on the CPU anyway
    out = torch.empty(x.shape, dtype=x.dtype)
    scale_by_region_max(e.numpy(), int(region), float(low), float(high), out.numpy())
    return out.to(x.device)


def replacement_values(x: torch.Tensor, perturbation: str, *, seed: int, low: float = 0.0, high: float = 1.0,
                       region: int | None = None, reference: torch.Tensor | None = None) -> torch.Tensor:
    """The values that replace a disabled region, of ``x``'s shape (see the module docstring for each kind).

    ``region`` is needed by ``dirichlet`` (it draws per region); ``reference`` (N, *x.shape[1:]) samples, or
    one mean image of x.shape[1:], is used by ``mean``. ``blur`` returns the blurred original (exact for one
    disabled region; AOPC blurs recursively instead, see :func:`fill_for`).
    """
    if perturbation == "uniform":
        return per_sample_uniform(x, seed, _STREAM, low, high).to(x.dtype)
    if perturbation == "dirichlet":
        if region is None:
            raise XaiCoreError("the dirichlet perturbation draws per region: pass region=")
        return dirichlet_regions(x, region, seed=seed, low=low, high=high)
    if perturbation == "mean":
        if reference is None:
            return x.detach().mean(0, keepdim=True).expand_as(x).contiguous()
        ref = reference.detach().to(x.device, x.dtype)
        if ref.shape == x.shape[1:]:
            ref = ref[None]
        if ref.ndim != x.ndim or ref.shape[1:] != x.shape[1:]:
            raise XaiCoreError(f"reference shape {tuple(reference.shape)} fits neither samples nor one mean "
                               f"image of x's {tuple(x.shape[1:])}")
        return ref.mean(0, keepdim=True).expand_as(x).contiguous()
    if perturbation == "blur":
        if x.ndim != 4:
            raise XaiCoreError(f"blur filters images: x must be (B, C, H, W), got {tuple(x.shape)}")
        return gaussian_blur(x.detach())
    raise XaiCoreError(f"unknown perturbation {perturbation!r}; available: {', '.join(PERTURBATIONS)}")


def fill_for(x: torch.Tensor, fill: str, *, features: Features | None = None, seed: int = 0,
             reference: torch.Tensor | None = None, ranking: torch.Tensor | None = None, backend: str = "auto",
             fills: tuple[str, ...] = FILLS, owner: str = "fill") -> torch.Tensor:
    """The x-shaped values that the removed features of ``features`` take: the adapter's own (columns, tokens:
    :meth:`~xaicore.features.Features.default_fill`), else the named ``fill``, one of ``fills`` (see the module
    docstring; ``dirichlet`` draws per region of :class:`~xaicore.features.Regions`).

    With ``ranking`` (B, L) over regions, ``blur`` is AOPC's exact recursion x⁽ᵏ⁾ = g(x⁽ᵏ⁻¹⁾, r_k), run once over
    all L regions in that order (a numba or torch kernel): its last image x⁽ᴸ⁾ holds every region's step-k value,
    since a region is written at its step and never again. Without it (one feature removed at a time), ``blur``
    is the blurred original."""
    own = features.default_fill() if features is not None else None
    if own is not None:
        return own
    if fill not in fills:
        word = "perturbation" if fills == PERTURBATIONS else "fill"  # the removal metrics' g(x, r)
        raise XaiCoreError(f"{owner}: unknown {word} {fill!r}; expected one of {', '.join(fills)}")
    x = x.detach()
    if fill == "zero":
        return torch.zeros_like(x)
    if fill == "blur" and ranking is not None:
        region = getattr(features, "region", None)
        if x.ndim != 4 or region is None:
            raise XaiCoreError(f"{owner}: the recursive blur runs over the regions of images (B, C, H, W)")
        h, w = x.shape[2:]
        final = x.clone()
        get_backend(backend, x.device).blur_regions(final, ranking, blur_matrix(h, device=x.device),
                                                    blur_matrix(w, device=x.device), region)
        return final
    if fill in ("mean", "uniform", "blur", "dirichlet"):
        region = getattr(features, "region", None)
        return replacement_values(x, fill, seed=seed, region=region, reference=reference).to(x.dtype).contiguous()
    if fill == "segment_mean":
        if not isinstance(features, Segments):
            raise XaiCoreError(f"{owner}: fill 'segment_mean' needs segment features (superpixels or a grid)")
        b, c = x.shape[:2]
        flat = x.reshape(b, c, -1).to(torch.float64)
        labels = features.labels.expand(b, -1)
        sums = torch.zeros(b, c, features.n_features, dtype=torch.float64, device=x.device)
        sums.scatter_add_(2, labels[:, None].expand(b, c, -1), flat)
        counts = torch.zeros(b, features.n_features, dtype=torch.float64, device=x.device)
        counts.scatter_add_(1, labels, torch.ones_like(labels, dtype=torch.float64))
        means = sums / counts.clamp_min(1)[:, None]
        return means.gather(2, labels[:, None].expand(b, c, -1)).reshape(x.shape).to(x.dtype)
    raise XaiCoreError(f"{owner}: fill {fill!r} has no values here")
