"""Image features: the AOPC grid of square regions, superpixels, and sliding windows."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xaicore.errors import NotApplicable, XaiCoreError
from xaicore.features.base import Build, Features, Segments, _GridLanes
from xaicore.kernels import get_backend
from xaicore.kernels.torch_kernels import region_sums

#: the segmentations :class:`Superpixels` offers
SEGMENTATIONS = ("slic", "quickshift", "grid")


def _check_image(x: torch.Tensor, owner: str) -> None:
    if x.ndim != 4:
        kind = "tabular (B, F)" if x.ndim == 2 else f"{x.ndim}-d"
        raise NotApplicable(f"{owner} are image features: x must be (B, C, H, W); {kind} input "
                            f"{tuple(x.shape)} is not supported")


@lru_cache(maxsize=64)
def _grid_labels(h: int, w: int, region: int) -> np.ndarray:
    wb = -(-w // region)
    lab = (np.arange(h)[:, None] // region) * wb + np.arange(w)[None, :] // region
    lab.setflags(write=False)
    return lab


class Regions(Segments):
    """The ``region``×``region`` squares of the AOPC grid (survey §4.5.1), row-major; edge squares of images
    not divisible by ``region`` are smaller. Feature r is region r of :func:`xaicore.kernels.region_grid`."""

    def __init__(self, x: torch.Tensor, region: int) -> None:
        _check_image(x, "regions")
        h, w = x.shape[2:]
        if isinstance(region, bool) or not isinstance(region, int) or not 1 <= region <= min(h, w):
            raise XaiCoreError(f"region={region!r} must be a side length in 1..{min(h, w)} for {h}x{w} images")
        self.region = region
        super().__init__(x, torch.from_numpy(_grid_labels(h, w, region).copy()))

    def pool(self, relevance: torch.Tensor) -> torch.Tensor:
        """(B, L) float64 summed relevance per region, added in the numba kernels' order (their ties tie here)."""
        return region_sums(relevance.detach(), self.region).to(self.x.device)

    def ranking(self, relevance: torch.Tensor, *, descending: bool = True, backend: str = "auto") -> torch.Tensor:
        """(B, L) regions by decreasing summed relevance (stable), reversed when not ``descending`` (LeRF)."""
        order = get_backend(backend, self.x.device).region_order(relevance, self.region).to(self.x.device)
        return order if descending else order.flip(1)

    def builder(self, keep: torch.Tensor, fill: torch.Tensor) -> Build:
        h, w = self.x.shape[2:]
        if h % self.region or w % self.region:  # edge squares are smaller: position by position
            return super().builder(keep, fill)
        return _GridLanes(self, self._check_keep(keep), fill, self.region)


def _relabel(seg: np.ndarray) -> np.ndarray:
    _, inv = np.unique(seg, return_inverse=True)
    return inv.reshape(seg.shape)


#: SLIC tries ``compactness`` × 1, 10, 100, 1000 until a sample has enough segments (:func:`_slic`)
SLIC_RAISES = 4


def _slic(slic: Any, img: np.ndarray, n_segments: int, compactness: float) -> np.ndarray:
    """SLIC labels of one (H, W, C) image, 0..F−1, with at least a quarter of ``n_segments`` (and 2) segments
    where a compactness up to 1000× the given one reaches it: the colour term dominates SLIC's distance at a
    low compactness, so flat-coloured images (shapes on a plain background; RGB is compared in Lab, 0..100) fall
    into 1–3 segments, and a higher compactness moves SLIC towards its regular grid. The first compactness that
    suffices is taken (the digits' 0.1 at once), else the one with the most segments."""
    want = max(2, n_segments // 4)
    best: np.ndarray | None = None
    for k in range(SLIC_RAISES):
        seg = _relabel(slic(img, n_segments=n_segments, compactness=compactness * 10 ** k, start_label=0,
                            channel_axis=-1, enforce_connectivity=True))
        if best is None or seg.max() > best.max():
            best = seg
        if seg.max() + 1 >= want:
            break
    assert best is not None
    return best


class Superpixels(Segments):
    """Superpixels per sample (the features of LIME's image explainer, Ribeiro et al. 2016, §6.1).

    ``segmentation``: ``slic`` (scikit-image SLIC, ``n_segments``, ``compactness``), ``quickshift``
    (``kernel_size``, ``max_dist``, ``ratio``: the ``lime`` package's default segmenter) or ``grid`` (squares of
    side ``cell``). Each sample gets its own map; F is the largest count, samples with fewer segments have
    empty trailing features. SLIC raises its compactness on a sample with fewer than ``n_segments // 4``
    segments (:func:`_slic`). A sample that yields a single segment is an error: nothing to switch."""

    def __init__(self, x: torch.Tensor, segmentation: str = "slic", *, n_segments: int = 50,
                 compactness: float = 0.1, kernel_size: float = 4.0, max_dist: float = 200.0, ratio: float = 0.2,
                 cell: int = 4, seed: int = 0) -> None:
        _check_image(x, "superpixels")
        if segmentation not in SEGMENTATIONS:
            raise XaiCoreError(f"unknown segmentation {segmentation!r}; expected one of {', '.join(SEGMENTATIONS)}")
        b, c, h, w = x.shape
        if segmentation == "grid":
            if isinstance(cell, bool) or not isinstance(cell, int) or not 1 <= cell < max(h, w):
                raise XaiCoreError(f"cell={cell!r} must be in 1..{max(h, w) - 1} for {h}x{w} images (one cell "
                                   "covering the image is a single segment)")
            self.segmentation = segmentation
            Segments.__init__(self, x, torch.from_numpy(_grid_labels(h, w, cell).copy()))
            return
        from skimage.segmentation import quickshift, slic

        if segmentation == "slic" and (not isinstance(n_segments, int) or n_segments < 2):
            raise XaiCoreError(f"n_segments={n_segments!r} must be an integer >= 2")
        img = x.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
        maps = []
        for i in range(b):
            if segmentation == "slic":
                seg = _slic(slic, img[i], n_segments, float(compactness))
            else:
                rgb = img[i] if c == 3 else np.repeat(img[i][..., :1], 3, axis=-1)
                seg = _relabel(quickshift(rgb, kernel_size=float(kernel_size), max_dist=float(max_dist),
                                          ratio=float(ratio), rng=int(seed)))
            if seg.max() < 1:
                hint = (f"even at compactness {float(compactness) * 10 ** (SLIC_RAISES - 1):g} (a flat image?)"
                        if segmentation == "slic" else "; lower max_dist or kernel_size")
                raise XaiCoreError(f"the {segmentation} segmentation of sample {i} yields one segment {hint}; use "
                                   "features='grid' (squares of side cell) or pass your own segmentation as "
                                   "feature_mask=")
            maps.append(seg)
        self.segmentation = segmentation
        Segments.__init__(self, x, torch.from_numpy(np.stack(maps)))


def user_segments(x: torch.Tensor, feature_mask: Any) -> Segments:
    """The user's segmentation as features, following Captum's ``feature_mask``: integer labels (B, H, W),
    (B, 1, H, W), or one map (H, W) / (1, H, W) / (1, 1, H, W) for every sample, each label one feature over all
    channels of its pixels; or a callable as the ``lime`` package's ``segmentation_fn``, called per image with the
    (H, W, C) float64 array and returning (H, W) labels. Labels are renumbered 0..F−1 per sample."""
    _check_image(x, "feature_mask segments")
    b, _, h, w = x.shape
    if callable(feature_mask):
        img = x.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
        maps = [np.asarray(feature_mask(img[i])) for i in range(b)]
        bad = next((m.shape for m in maps if m.shape != (h, w)), None)
        if bad is not None:
            raise XaiCoreError(f"feature_mask: the segmentation function returned labels of shape {bad}; it must "
                               f"return one label per pixel, ({h}, {w})")
        labels = np.stack(maps)
    else:
        labels = torch.as_tensor(feature_mask).detach().cpu()
        if labels.ndim == 4:
            if labels.shape[1] != 1:
                raise XaiCoreError(f"feature_mask {tuple(labels.shape)}: one label per pixel, shared by the "
                                   "channels, is supported: give (B, H, W) or (B, 1, H, W)")
            labels = labels[:, 0]
        if labels.ndim == 2:
            labels = labels[None]
        if labels.ndim != 3 or tuple(labels.shape[1:]) != (h, w) or labels.shape[0] not in (1, b):
            raise XaiCoreError(f"feature_mask {tuple(labels.shape)} does not fit the batch {tuple(x.shape)}: give "
                               f"(B, H, W) = ({b}, {h}, {w}) labels, or one (H, W) map for every sample")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise XaiCoreError(f"feature_mask must hold integer labels, got {labels.dtype}")
        labels = labels.expand(b, h, w).numpy()
    if not np.issubdtype(labels.dtype, np.integer):
        raise XaiCoreError(f"feature_mask must hold integer labels, got {labels.dtype}")
    maps = np.stack([_relabel(m) for m in labels])
    one = [i for i, m in enumerate(maps) if m.max() < 1]
    if one:
        raise XaiCoreError(f"feature_mask: sample {one[0]} has a single segment: nothing to switch off")
    return Segments(x, torch.from_numpy(maps))


class Windows(Features):
    """Sliding ``window``×``window`` windows over all channels at 0, s, 2s, … (no padding); they overlap when
    ``stride`` < ``window``. ``partial=True`` (Captum's ``Occlusion``) adds windows until the image is covered, the
    last one cut at the border; ``partial=False`` (Zintgraf et al.'s PDA) keeps only windows that fit whole.
    ``spread`` gives each pixel the mean over the windows covering it (0 if none)."""

    def __init__(self, x: torch.Tensor, window: int, stride: int, *, partial: bool = True) -> None:
        _check_image(x, "windows")
        h, w = x.shape[2:]
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= min(h, w):
            raise XaiCoreError(f"window={window!r} must be in 1..{min(h, w)} for {h}x{w} images")
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise XaiCoreError(f"stride={stride!r} must be an integer >= 1")
        self.x, self.window, self.stride = x, window, stride
        steps = (lambda n: -(-(n - window) // stride)) if partial else (lambda n: (n - window) // stride)
        self.grid = (steps(h) + 1, steps(w) + 1)
        self._size = ((self.grid[0] - 1) * stride + window, (self.grid[1] - 1) * stride + window)
        self.n_features = self.grid[0] * self.grid[1]
        self.counts = torch.full((x.shape[0],), self.n_features, dtype=torch.long, device=x.device)
        self._cover = self._fold(torch.ones(1, self.n_features, dtype=torch.float64, device=x.device))

    def _fold(self, v: torch.Tensor) -> torch.Tensor:
        """(N, F) per-window values summed onto the pixels each window covers: (N, 1, H, W)."""
        cols = v[:, None, :].expand(v.shape[0], self.window * self.window, v.shape[1])
        h, w = self.x.shape[2:]
        out = F.fold(cols, (max(self._size[0], h), max(self._size[1], w)), self.window, stride=self.stride)
        return out[..., :h, :w]

    def offsets(self) -> torch.Tensor:
        """(F, 2) top-left (y, x) of each window, row-major."""
        ys = torch.arange(self.grid[0], device=self.x.device) * self.stride
        xs = torch.arange(self.grid[1], device=self.x.device) * self.stride
        return torch.cartesian_prod(ys, xs)

    def apply(self, keep: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        keep = self._check_keep(keep)
        x = self.x
        k, rows = keep.shape[:2]
        off = self._fold((~keep).reshape(k * rows, -1).to(x.dtype)).view(k, rows, 1, *x.shape[2:])
        return torch.where(off == 0, x[None], fill[None]).reshape(k * x.shape[0], *x.shape[1:])

    def unchanged(self, fill: torch.Tensor) -> torch.Tensor:
        """(B, F) True where filling window f of sample b with ``fill`` leaves x as it is (x equals the fill on
        the whole window): such a window's effect is exactly none, whatever the passes' last bits say."""
        changed = (self.x != fill).any(1, keepdim=True).to(self.x.dtype)  # (B, 1, H, W)
        h, w = self.x.shape[2:]
        padded = F.pad(changed, (0, max(self._size[1] - w, 0), 0, max(self._size[0] - h, 0)))
        return F.unfold(padded, self.window, stride=self.stride).amax(1) == 0

    def spread(self, values: torch.Tensor) -> torch.Tensor:
        values = self._check_values(values)
        summed = self._fold(values.to(torch.float64))
        out = torch.where(self._cover > 0, summed / self._cover.clamp_min(1), torch.zeros_like(summed))
        return out.to(values.dtype).expand(-1, self.x.shape[1], -1, -1).contiguous()


def make_features(x: torch.Tensor, kind: str, **params: Any) -> Features:
    """The adapter named ``kind`` (``regions``, ``windows`` or a segmentation of :data:`SEGMENTATIONS`)."""
    if kind == "regions":
        return Regions(x, **params)
    if kind == "windows":
        return Windows(x, **params)
    if kind in SEGMENTATIONS:
        return Superpixels(x, kind, **params)
    raise XaiCoreError(f"unknown features {kind!r}; expected regions, windows or one of {', '.join(SEGMENTATIONS)}")
