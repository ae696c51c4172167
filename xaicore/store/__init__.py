"""The Zarr archives: heatmaps (chunk-aligned block writes), scores, and ``open_archive``; every archive's schema
name is in :mod:`xaicore.store.schemas`."""

from xaicore.store.archive import (
    ArchiveWriter,
    HeatmapArchiveWriter,
    explained_counts,
    not_applicable,
    open_archive,
    verify_manifest,
    write_dataset,
)
from xaicore.store.schemas import (
    ACTIVATIONS_SCHEMA,
    ANALYSIS_SCHEMA,
    FEATURES_SCHEMA,
    HEATMAP_SCHEMA,
    MAXIMIZE_SCHEMA,
    ROAR_SCHEMA,
    SCHEMAS,
    SCORES_SCHEMA,
)

__all__ = ["ACTIVATIONS_SCHEMA", "ANALYSIS_SCHEMA", "FEATURES_SCHEMA", "HEATMAP_SCHEMA", "MAXIMIZE_SCHEMA",
           "ROAR_SCHEMA", "SCHEMAS", "SCORES_SCHEMA", "ArchiveWriter", "HeatmapArchiveWriter", "explained_counts",
           "not_applicable", "open_archive", "verify_manifest", "write_dataset"]
