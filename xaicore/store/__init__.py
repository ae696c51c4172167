"""The Zarr archives: heatmaps (chunk-aligned block writes), scores, and ``open_archive``."""

from xaicore.store.archive import (
    HEATMAP_SCHEMA,
    SCORES_SCHEMA,
    ArchiveWriter,
    HeatmapArchiveWriter,
    explained_counts,
    not_applicable,
    open_archive,
    verify_manifest,
    write_dataset,
)

__all__ = ["HEATMAP_SCHEMA", "SCORES_SCHEMA", "ArchiveWriter", "HeatmapArchiveWriter", "explained_counts",
           "not_applicable", "open_archive", "verify_manifest", "write_dataset"]
