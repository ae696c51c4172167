"""What a "feature" is for a method that switches features on and off (occlusion, LIME, PDA, AOPC).

An adapter is built on a batch ``x`` and answers three questions:

* ``n_features`` (F) and ``counts`` (B,): how many features each sample has (samples with fewer than F have
  empty trailing features, which change nothing);
* ``apply(keep, fill)``: a (k, B, F) — or (k, 1, F), shared by every sample — boolean keep-mask becomes the
  (k·B, …) model input, row ``j·B + i`` being sample i with every feature off in ``keep[j, i]`` set to ``fill``;
* ``spread(values)``: (B, F) values per feature back to x's shape (a pixel takes the mean of the features
  covering it; pixels no feature covers get 0).

:func:`features_for` picks the adapter of a batch's kind and its fill; every method and metric builds its
features there. Image adapters: :class:`Regions` (the AOPC grid), :class:`Superpixels` (SLIC, quickshift or a grid) and
:class:`Windows` (sliding, possibly overlapping windows: occlusion, PDA). Tabular :class:`Columns` (with the
training statistics of :class:`ColumnStats`) and text :class:`Tokens` are adapters of the same interface.
"""

from xaicore.features.base import Features, Segments
from xaicore.features.fills import FILLS, fill_for
from xaicore.features.image import SEGMENTATIONS, Regions, Superpixels, Windows, make_features, user_segments
from xaicore.features.select import UNITS, adapter_for, features_for
from xaicore.features.tabular import Columns, ColumnStats, Tokens
from xaicore.kinds import PAD, UNK, describe_kind, input_kind

__all__ = ["FILLS", "PAD", "SEGMENTATIONS", "UNITS", "UNK", "ColumnStats", "Columns", "Features", "Regions", "Segments",
           "Superpixels", "Tokens", "Windows", "adapter_for", "describe_kind", "features_for", "fill_for", "input_kind",
           "make_features", "user_segments"]
