"""The schema name of every archive xaicore writes, in one place: ``name/version``, stored in the archive's
``xaicore_schema`` attribute and checked by :func:`xaicore.store.open_archive` (``schema=``). A writer and every
reader of an archive use the same constant, so a format change is one version bump here."""

from __future__ import annotations

HEATMAP_SCHEMA = "xaicore.heatmaps/1"  # explain stage: relevance per model × method × sample, and its extras
SCORES_SCHEMA = "xaicore.scores/1"  # score stage: AOPC curves, faithfulness, sanity similarities, invariance
ROAR_SCHEMA = "xaicore.roar/1"  # roar stage: ROAR/KAR accuracies of retrained models
ANALYSIS_SCHEMA = "xaicore.analysis/1"  # analysis stage: localization, TCAV, Network Dissection, SpRAy
ACTIVATIONS_SCHEMA = "xaicore.activations/1"  # analysis stage: the planted model's activations
MAXIMIZE_SCHEMA = "xaicore.maximize/1"  # maximize stage: activation maximisers per model and parameterization
FEATURES_SCHEMA = "xaicore.features/1"  # tabular and text stages: relevance and removal curves per feature

SCHEMAS = (HEATMAP_SCHEMA, SCORES_SCHEMA, ROAR_SCHEMA, ANALYSIS_SCHEMA, ACTIVATIONS_SCHEMA, MAXIMIZE_SCHEMA,
           FEATURES_SCHEMA)
