"""The outputs folder: where each step reads and writes, relative to one output folder (``outputs/`` by default),
the names of the survey's own models, and the models folders' index."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from xaicore.errors import XaiCoreError

#: the survey's trained model and its randomized-label control (zoo models are ``zoo:<arch>``)
TRAINED, RANDOM_LABELS = "trained", "random_labels"
#: the stages of other input kinds, each with its own folder under the outputs (``outputs/tabular/``, ...)
BRANCHES = ("tabular", "text")


@dataclasses.dataclass(frozen=True)
class Paths:
    root: Path = Path("outputs")

    @property
    def dataset(self) -> Path:
        return self.root / "data" / "dataset.npz"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def controls(self) -> Path:
        return self.root / "controls"

    @property
    def fitted(self) -> Path:
        return self.root / "fitted"

    @property
    def autoencoder(self) -> Path:
        return self.root / "autoencoder.pt"

    @property
    def pattern_quality(self) -> Path:
        return self.root / "pattern_quality.json"

    @property
    def heatmaps(self) -> Path:
        return self.root / "heatmaps.zarr"

    @property
    def scores(self) -> Path:
        return self.root / "scores.zarr"

    @property
    def roar(self) -> Path:
        return self.root / "roar.zarr"

    @property
    def maximize(self) -> Path:
        return self.root / "maximize.zarr"

    @property
    def planted(self) -> Path:
        """The ``planted`` stage's folder: the planted digits and the model trained on them."""
        return self.root / "planted"

    @property
    def analysis(self) -> Path:
        return self.root / "analysis.zarr"

    @property
    def planted_heatmaps(self) -> Path:
        return self.root / "planted_heatmaps.zarr"

    @property
    def truth_heatmaps(self) -> Path:
        return self.root / "truth_heatmaps.zarr"

    @property
    def activations(self) -> Path:
        return self.root / "activations.zarr"

    def branch(self, kind: str) -> Path:
        """The ``tabular`` or ``text`` stage's folder: its data set, model and ``features.zarr``."""
        return self.root / kind

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def plots(self) -> Path:
        """The curves as CSV for ``dvc plots`` (aggregate stage): AOPC per order, ROAR and KAR."""
        return self.root / "plots"

    @property
    def figures(self) -> Path:
        return self.root / "figures"


def model_file(name: str) -> str:
    """File stem of a model name (``cascade:fc2`` -> ``cascade__fc2``)."""
    return name.replace(":", "__").replace("/", "_")


def read_index(directory: Path) -> dict[str, dict[str, Any]]:
    """``{model name: {file, train_accuracy, test_accuracy, ...}}`` of a models folder."""
    path = directory / "index.json"
    if not path.is_file():
        raise XaiCoreError(f"{path} is missing; run the stage that writes {directory} first")
    return json.loads(path.read_text())
