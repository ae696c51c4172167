"""The one place that picks a features adapter by input kind: :func:`features_for` gives, for any batch, the
adapter of its kind and the values its removed features take. Every perturbation method and removal metric
(occlusion, LIME, anchors, PDA, AOPC, faithfulness) builds its features here.

The units of each kind (:data:`UNITS`): images ``regions`` (the AOPC grid), ``windows`` (sliding, occlusion and
PDA) or a segmentation of :data:`~xaicore.features.SEGMENTATIONS` (LIME, anchors); tables ``columns`` (their
training statistics come as ``reference``, a :class:`~xaicore.features.ColumnStats`); text ``tokens``. ``auto``
takes the caller's image unit (``image=``) on images and the only unit of the other kinds.
"""

from __future__ import annotations

from typing import Any

import torch

from xaicore.errors import NotApplicable, XaiCoreError
from xaicore.features.base import Features
from xaicore.features.fills import FILLS, fill_for
from xaicore.features.image import SEGMENTATIONS, make_features
from xaicore.features.tabular import Columns, ColumnStats, Tokens
from xaicore.kinds import describe_kind, input_kind

#: the features of each input kind
UNITS: dict[str, tuple[str, ...]] = {"image": ("regions", "windows", *SEGMENTATIONS), "tabular": ("columns",),
                                     "text": ("tokens",)}


def adapter_for(x: torch.Tensor, unit: str = "auto", *, image: str = "regions",
                reference: ColumnStats | torch.Tensor | None = None, seed: int = 0, owner: str = "features",
                **geometry: Any) -> Features:
    """The features adapter of ``x``'s kind: ``unit`` (one of :data:`UNITS` for the kind, or ``auto``), built
    with ``geometry`` on images (``region``; ``window``, ``stride``, ``partial``; ``n_segments``, ``compactness``,
    ``cell``; ``seed`` for the segmentations) and with the training ``reference`` statistics on tables."""
    kind = input_kind(x)
    if kind not in UNITS:
        raise NotApplicable(f"{owner} removes features of images, tables and text; {describe_kind(x)} is none of them")
    native = UNITS[kind]
    if unit == "auto":
        unit = image if kind == "image" else native[0]
    elif unit not in native:
        known = any(unit in units for units in UNITS.values())
        raise XaiCoreError(f"{owner}: {'' if known else 'unknown '}features {unit!r}"
                           f"{f' do not apply to {describe_kind(x)}' if known else ''}; expected auto or "
                           f"{', '.join(native)}")
    if unit == "columns":
        if not isinstance(reference, ColumnStats):
            raise XaiCoreError(f"{owner} on table rows needs the training columns' statistics: pass reference="
                               "xaicore.features.ColumnStats.fit(x_train, nominal=...), got "
                               f"{type(reference).__name__}")
        return Columns(x, reference)
    if unit == "tokens":
        return Tokens(x)
    if unit in SEGMENTATIONS:
        geometry["seed"] = seed
    return make_features(x, unit, **geometry)


def features_for(x: torch.Tensor, unit: str = "auto", *, image: str = "regions", fill: str = "zero",
                 fills: tuple[str, ...] = FILLS, reference: ColumnStats | torch.Tensor | None = None, seed: int = 0,
                 ranking: torch.Tensor | None = None, backend: str = "auto", owner: str = "features",
                 **geometry: Any) -> tuple[Features, torch.Tensor]:
    """(adapter, fill): :func:`adapter_for` and :func:`~xaicore.features.fill_for` in one call. ``fill`` (one of
    ``fills``) applies to images; columns and tokens take their own (training mean or mode, UNK)."""
    features = adapter_for(x.detach(), unit, image=image, reference=reference, seed=seed, owner=owner,
                           **geometry)
    values = fill_for(x, fill, features=features, seed=seed, reference=reference, ranking=ranking,
                      backend=backend, fills=fills, owner=owner)
    return features, values
