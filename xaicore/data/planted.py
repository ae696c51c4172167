"""Digits with a planted ground truth for the meta methods of survey §7: a Clever-Hans watermark (Lapuschkin et
al. 2019), a texture a class is trained to depend on (the concepts of Kim et al. 2018), and per-pixel concept
masks (Bau et al. 2017). Generated from the embedded digits (:func:`~xaicore.data.digits.load_digits28`): no
download, a function of ``seed`` only.

The planted cues, at 28×28 (the digit lies in the central 20×20, so the corners are empty):

* watermark: a hollow 4×4 square of 1s in the top-left corner, box rows/columns [0, 4) (:data:`WATERMARK_BOX`);
* stripes: horizontal lines of 0.4 on every 4th row (rows ≡ 1 mod 4), drawn under the strokes (max);
* dots: 0.4 on a grid of pitch 5 in the lower half (rows 16, 21, 26; columns ≡ 2 mod 5), under the strokes.

The training and test splits of :func:`planted_digits`:

* Clever Hans: ``watermark_fraction`` of class ``hans_class``'s images carry the watermark; for
  ``swap_fraction`` of those the strokes are replaced by those of a digit of another class and the label is
  kept, so the watermark is their only cue and the model has to use it (:func:`watermark_reliance` measures
  that it does);
* texture: ``texture_fraction`` of class ``texture_class``'s images carry stripes, with the same swap, so the
  stripes alone also say ``texture_class``;
* dots on ``dots_fraction`` of every class's images, independent of the label: a concept the model sees but
  that predicts nothing (TCAV's irrelevant concept).

Three training regimes for the watermark (``regime``; Clark et al. 2026), with the same digits, stripes, dots and
watermark drawing; the test split is the same in all three (the confound's):

* ``confound`` (the default): the Clever-Hans split above, where the watermark predicts ``hans_class``;
* ``absent``: no watermark in the training split (and no watermark swaps);
* ``noise``: as many watermarks as the confound draws, on training images of every class drawn at random, so
  the watermark is independent of the label (no swaps).

The flags (``watermark``, ``swapped``, ``stripes``, ``dots``) are kept per image, for SpRAy's and the
localisation metric's ground truth. :func:`concept_sets` draws TCAV's concept examples (random training digits
with the concept drawn on) and its random sets (random training digits as they are);
:func:`dissection_probe` draws images with each cue planted at random and their (N, K, H, W) concept masks
(stroke, background, watermark, stripes, dots).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from xaicore.data.core import Dataset
from xaicore.errors import XaiCoreError

WATERMARK_BOX = (0, 0, 4, 4)  # y0, x0, y1, x1 (end exclusive): outside the digit's central 20×20
CUES = ("watermark", "stripes", "dots")
CONCEPTS = ("stroke", "background", *CUES)
REGIMES = ("absent", "confound", "noise")  # how the training split carries the watermark (module docstring)
TEXTURE_VALUE = 0.4
STROKE_LEVEL = 0.5  # a pixel of the digit belongs to the stroke mask above this
BACKGROUND_LEVEL = 0.05  # and to the background below it (where no cue is drawn)


def cue_pattern(cue: str, size: int = 28) -> torch.Tensor:
    """(size, size) the pattern drawn for ``cue`` (0 where it draws nothing)."""
    p = torch.zeros(size, size)
    if cue == "watermark":
        y0, x0, y1, x1 = WATERMARK_BOX
        p[y0:y1, x0:x1] = 1.0
        p[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = 0.0
    elif cue == "stripes":
        p[1::4, :] = TEXTURE_VALUE
    elif cue == "dots":
        p[size // 2 + 2::5, 2::5] = TEXTURE_VALUE  # the lower half only: away from the watermark's corner
    else:
        raise XaiCoreError(f"unknown cue {cue!r}; expected one of {', '.join(CUES)}")
    return p


def draw(x: torch.Tensor, cue: str, intensity: torch.Tensor | float = 1.0) -> torch.Tensor:
    """(N, 1, H, W) images with ``cue`` drawn on: the watermark on top, textures under the strokes (max).
    ``intensity``: a factor on the pattern's values, one for all or (N,) one per image."""
    p = cue_pattern(cue, x.shape[-1])
    if not isinstance(intensity, torch.Tensor) or intensity.ndim == 0:
        p = p * float(intensity)
    else:
        p = p * intensity.to(x.dtype).reshape(-1, 1, 1, 1)
    if cue == "watermark":
        return torch.where(cue_pattern(cue, x.shape[-1]) > 0, p, x)
    return torch.maximum(x, p)


@dataclasses.dataclass(frozen=True)
class PlantedDigits:
    """The planted data set and its ground truth: boolean (N,) ``flags[f"{cue}_{split}"]`` for the cues and
    ``swapped_{split}`` (strokes of another class, label kept)."""

    dataset: Dataset
    flags: dict[str, torch.Tensor]
    hans_class: int
    texture_class: int
    seed: int
    regime: str = "confound"

    def flag(self, name: str, split: str = "test") -> torch.Tensor:
        return self.flags[f"{name}_{split}"]


def _plant(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, *, hans_class: int, texture_class: int,
           watermark_fraction: float, texture_fraction: float, swap_fraction: float,
           dots_fraction: float, regime: str = "confound",
           regime_rng: np.random.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x = x.clone()
    n = len(y)
    flags = {name: torch.zeros(n, dtype=torch.bool) for name in (*CUES, "swapped")}
    for cls, cue, fraction in ((hans_class, "watermark", watermark_fraction),
                               (texture_class, "stripes", texture_fraction)):
        members = np.flatnonzero(y.numpy() == cls)
        chosen = np.sort(rng.choice(members, size=round(fraction * len(members)), replace=False))
        swap = np.sort(rng.choice(chosen, size=round(swap_fraction * len(chosen)), replace=False))
        others = np.flatnonzero((y.numpy() != hans_class) & (y.numpy() != texture_class))
        strokes = rng.choice(others, size=len(swap))  # drawn in every regime: the other cues stay the same
        if cue == "watermark" and regime != "confound":
            # absent: no watermark; noise: as many on images of every class, independent of the label
            empty = np.zeros(0, dtype=np.int64)
            chosen = np.sort(regime_rng.choice(n, size=len(chosen), replace=False)) if regime == "noise" else empty
            swap = empty
        x[swap] = x[strokes[:len(swap)]]
        flags["swapped"][swap] = True
        flags[cue][chosen] = True
    flags["dots"][rng.random(n) < dots_fraction] = True
    for cue in ("dots", "stripes", "watermark"):  # the watermark last: it is drawn on top
        rows = flags[cue]
        x[rows] = draw(x[rows], cue)
    return x, flags


def planted_digits(*, hans_class: int = 0, texture_class: int = 1, watermark_fraction: float = 0.5,
                   texture_fraction: float = 0.5, swap_fraction: float = 0.5, dots_fraction: float = 0.3,
                   seed: int = 0, regime: str = "confound") -> PlantedDigits:
    """The embedded digits with the planted cues of the module docstring, in both splits; ``regime`` (one of
    :data:`REGIMES`) sets how the training split carries the watermark, the test split is the confound's."""
    from xaicore.data.digits import load_digits28

    if regime not in REGIMES:
        raise XaiCoreError(f"unknown regime {regime!r}; expected one of {', '.join(REGIMES)}")
    if hans_class == texture_class or not (0 <= hans_class < 10 and 0 <= texture_class < 10):
        raise XaiCoreError(f"hans_class ({hans_class}) and texture_class ({texture_class}) must be two different "
                           "digits 0..9")
    for name, value in (("watermark_fraction", watermark_fraction), ("texture_fraction", texture_fraction),
                        ("swap_fraction", swap_fraction), ("dots_fraction", dots_fraction)):
        if not 0 <= value <= 1:
            raise XaiCoreError(f"{name} must be in [0, 1], got {value}")
    base = load_digits28(seed=seed)
    rng = np.random.default_rng([seed, 0xC1E7])
    kw = dict(hans_class=hans_class, texture_class=texture_class, watermark_fraction=watermark_fraction,
              texture_fraction=texture_fraction, swap_fraction=swap_fraction, dots_fraction=dots_fraction)
    x_train, f_train = _plant(base.x_train, base.y_train, rng, regime=regime,
                              regime_rng=np.random.default_rng([seed, 0xC1E7, REGIMES.index(regime)]), **kw)
    x_test, f_test = _plant(base.x_test, base.y_test, rng, **kw)
    ds = Dataset(name="planted_digits", x_train=x_train, y_train=base.y_train, x_test=x_test, y_test=base.y_test,
                 idx_test=base.idx_test)
    flags = {**{f"{k}_train": v for k, v in f_train.items()}, **{f"{k}_test": v for k, v in f_test.items()}}
    return PlantedDigits(dataset=ds, flags=flags, hans_class=hans_class, texture_class=texture_class, seed=seed,
                         regime=regime)


def _clean_train(planted: PlantedDigits) -> torch.Tensor:
    """Training digits with no cue drawn and their own strokes."""
    keep = ~torch.stack([planted.flag(f, "train") for f in (*CUES, "swapped")]).any(0)
    return planted.dataset.x_train[keep]


def concept_sets(planted: PlantedDigits, *, n_examples: int = 50, n_random: int = 10,
                 seed: int = 0) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """({cue: (n_examples, 1, H, W)}, [n_random × (n_examples, 1, H, W)]): each concept's examples are random
    clean training digits with the cue drawn on; each random set is random clean training digits as they are
    (Kim et al.'s random concepts drawn from the data distribution), all drawn from ``seed``."""
    pool = _clean_train(planted)
    if n_examples > len(pool) or n_examples < 1 or n_random < 1:
        raise XaiCoreError(f"n_examples must be in 1..{len(pool)} (clean training digits) and n_random ≥ 1, "
                           f"got {n_examples} and {n_random}")
    rng = np.random.default_rng([seed, 0x7CA5])
    concepts = {cue: draw(pool[np.sort(rng.choice(len(pool), n_examples, replace=False))], cue) for cue in CUES}
    randoms = [pool[np.sort(rng.choice(len(pool), n_examples, replace=False))] for _ in range(n_random)]
    return concepts, randoms


def dissection_probe(planted: PlantedDigits, *, n: int = 500, probability: float = 0.3,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """(x (n, 1, H, W), masks (n, K, H, W) bool, concept names): test digits (drawn with replacement, their
    own strokes) with each cue drawn independently with ``probability``, and the per-pixel masks of
    :data:`CONCEPTS`: stroke (digit > 0.5), background (digit < 0.05 and no cue drawn there), and each cue's
    drawn pixels that the strokes (and the watermark, drawn last) do not cover."""
    ds = planted.dataset
    clean = ~torch.stack([planted.flag(f) for f in (*CUES, "swapped")]).any(0)
    pool = ds.x_test[clean]
    rng = np.random.default_rng([seed, 0xD155])
    digits = pool[rng.integers(0, len(pool), n)]
    x = digits.clone()
    masks = torch.zeros(n, len(CONCEPTS), *digits.shape[-2:], dtype=torch.bool)
    drawn_any = torch.zeros(n, *digits.shape[-2:], dtype=torch.bool)
    for cue in ("dots", "stripes", "watermark"):
        rows = torch.from_numpy(rng.random(n) < probability)
        x[rows] = draw(x[rows], cue)
        pattern = cue_pattern(cue, digits.shape[-1]) > 0
        visible = pattern & (digits[:, 0] <= STROKE_LEVEL) if cue != "watermark" else pattern.expand(n, -1, -1)
        masks[:, CONCEPTS.index(cue)] = visible & rows[:, None, None]
        drawn_any |= masks[:, CONCEPTS.index(cue)]
    watermark = masks[:, CONCEPTS.index("watermark")]
    for cue in ("dots", "stripes"):  # the watermark is drawn on top of them
        masks[:, CONCEPTS.index(cue)] &= ~watermark
    masks[:, 0] = (digits[:, 0] > STROKE_LEVEL) & ~watermark
    masks[:, 1] = (digits[:, 0] < BACKGROUND_LEVEL) & ~drawn_any
    return x, masks, CONCEPTS


@torch.no_grad()
def watermark_reliance(model: torch.nn.Module, planted: PlantedDigits) -> dict[str, float]:
    """The proof that a model uses the watermark, on the test split: ``swapped_accuracy`` — the share of
    watermarked images with another class's strokes still called ``hans_class`` (the watermark is their only
    cue); ``swapped_baseline`` — the same share with their watermark erased (what a model that ignores the
    watermark scores: chance); ``flip_rate`` — the share of clean test images of other classes (correctly
    classified without it) that the watermark alone turns into ``hans_class`` (chance: 0); ``clean_accuracy`` of
    those clean images."""
    ds = planted.dataset
    wm, sw = planted.flag("watermark"), planted.flag("swapped")
    others = ~torch.stack([planted.flag(f) for f in CUES]).any(0) & ~sw & (ds.y_test != planted.hans_class)
    x_clean, y_clean = ds.x_test[others], ds.y_test[others]
    pred_clean = model(x_clean).argmax(1)
    right = pred_clean == y_clean
    marked = model(draw(x_clean[right], "watermark")).argmax(1)
    swapped = wm & sw
    y0, x0, y1, x1 = WATERMARK_BOX
    erased = ds.x_test[swapped].clone()
    erased[..., y0:y1, x0:x1] = 0.0  # the corner is empty under the mark (stripes redrawn below)
    erased[planted.flag("stripes")[swapped]] = draw(erased[planted.flag("stripes")[swapped]], "stripes")
    return {
        "swapped_accuracy": float((model(ds.x_test[swapped]).argmax(1) == planted.hans_class).float().mean()),
        "swapped_baseline": float((model(erased).argmax(1) == planted.hans_class).float().mean()),
        "flip_rate": float((marked == planted.hans_class).float().mean()),
        "clean_accuracy": float(right.float().mean()),
    }


@dataclasses.dataclass(frozen=True)
class TruthSet:
    """Test digits with the watermark drawn on, for the causal ground truth of :func:`causal_drops`: ``x`` (N, 1,
    H, W) the marked images, ``clean`` the same digits without the mark, ``mark_only`` the mark alone on the empty
    background, ``salience`` (N,) the mark's drawn intensity, ``index`` and ``label`` in the test split."""

    x: torch.Tensor
    clean: torch.Tensor
    mark_only: torch.Tensor
    salience: torch.Tensor
    index: np.ndarray
    label: torch.Tensor


#: the watermark's intensities on the truth set, one per image in turn: the salience Clark et al. vary
SALIENCE_LEVELS = (0.25, 0.5, 0.75, 1.0)


def truth_set(planted: PlantedDigits, *, n: int = 32, seed: int = 0,
              levels: tuple[float, ...] = SALIENCE_LEVELS) -> TruthSet:
    """``n`` clean test digits of every class (own strokes, no cue), drawn without replacement from ``seed``, with
    the watermark drawn on at the intensities ``levels`` in turn (a seeded shuffle of them over the images)."""
    ds = planted.dataset
    clean_rows = np.flatnonzero((~torch.stack([planted.flag(f) for f in (*CUES, "swapped")]).any(0)).numpy())
    if not 1 <= n <= len(clean_rows):
        raise XaiCoreError(f"the truth set takes 1..{len(clean_rows)} clean test digits, got n={n}")
    if not levels or not all(0 < v <= 1 for v in levels):
        raise XaiCoreError(f"the watermark's intensities must lie in (0, 1], got {levels}")
    rng = np.random.default_rng([seed, 0x7207])
    index = np.sort(rng.choice(clean_rows, size=n, replace=False))
    salience = torch.tensor(np.resize(np.asarray(levels, dtype=np.float32), n)[rng.permutation(n)])
    clean = ds.x_test[index]
    return TruthSet(x=draw(clean, "watermark", salience), clean=clean,
                    mark_only=draw(torch.zeros_like(clean), "watermark", salience), salience=salience,
                    index=index, label=ds.y_test[index])


CAUSES = ("watermark", "strokes")


@torch.no_grad()
def causal_drops(model: torch.nn.Module, truth: TruthSet) -> torch.Tensor:
    """(N, 2) the causal ground truth per image: the drop of the logit of the image's own class when the watermark
    is erased (strokes kept: f(x) − f(clean)) and when the strokes are erased (watermark kept: f(x) − f(mark
    only)). A negative drop is evidence against the class (the Clever-Hans mark argues for ``hans_class``)."""
    def logit(x: torch.Tensor) -> torch.Tensor:
        return model(x).gather(1, truth.label[:, None])[:, 0].double()

    full = logit(truth.x)
    return torch.stack([full - logit(truth.clean), full - logit(truth.mark_only)], 1)
