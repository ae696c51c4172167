"""Data, training and the randomized controls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from xaicore.config import Config
from xaicore.data import load_dataset, load_saved, randomized_labels, save_dataset
from xaicore.models import (
    accuracy,
    cascading_controls,
    independent_controls,
    load_model,
    save_model,
    train_model,
)
from xaicore.pipeline.paths import Paths, model_file

TRAINED, RANDOM_LABELS = "trained", "random_labels"


def preflight(cfg: Config) -> None:
    """Fail early, with one clear error, on input the run would only trip over later (missing data)."""
    if cfg.data.dataset == "mnist":
        from xaicore.data.mnist import check_mnist_dir

        check_mnist_dir(cfg.data.root)


def prepare_data(cfg: Config, paths: Paths) -> Path:
    """Materialize the configured dataset and its randomized-label training copy (one ``.npz``)."""
    d = cfg.data
    ds = load_dataset(d.dataset, root=d.root, size=d.size, test_fraction=d.test_fraction, seed=cfg.seed)
    save_dataset(ds, paths.dataset, y_train_random=randomized_labels(ds.y_train, cfg.seed).numpy())
    return paths.dataset


def _write_index(directory: Path, entries: dict[str, dict[str, Any]]) -> None:
    (directory / "index.json").write_text(json.dumps(entries, indent=1))


def read_index(directory: Path) -> dict[str, dict[str, Any]]:
    """``{model name: {file, train_accuracy, test_accuracy, ...}}`` of a models folder."""
    from xaicore.errors import XaiCoreError

    path = directory / "index.json"
    if not path.is_file():
        raise XaiCoreError(f"{path} is missing; run the stage that writes {directory} first")
    return json.loads(path.read_text())


def train_models(cfg: Config, paths: Paths, *, progress: bool = True) -> Path:
    """Train the survey's model on the true labels, the data-randomization control on permuted labels, and the
    ``model.zoo`` architectures on the true labels."""
    ds, extra = load_saved(paths.dataset)
    m = cfg.model
    paths.models.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict[str, Any]] = {}
    runs = [(TRAINED, m.arch, ds.y_train, m.epochs, m.lr, cfg.seed),
            (RANDOM_LABELS, m.arch, extra["y_train_random"], m.random_labels_epochs, m.random_labels_lr, cfg.seed + 1)]
    zoo_epochs = m.epochs if m.zoo_epochs is None else m.zoo_epochs
    runs += [(f"zoo:{arch}", arch, ds.y_train, zoo_epochs, m.lr, cfg.seed) for arch in m.zoo]
    for name, arch, labels, epochs, lr, seed in runs:
        res = train_model(arch, ds.x_train, labels, n_classes=ds.n_classes, epochs=epochs,
                          batch_size=m.batch_size, lr=lr, seed=seed, x_test=ds.x_test, y_test=ds.y_test,
                          desc=f"train {name}", progress=progress)
        stem = model_file(name)
        save_model(res.model, paths.models / f"{stem}.pt", arch=arch, input_shape=ds.input_shape,
                   n_classes=ds.n_classes)
        entries[name] = {"file": f"{stem}.pt", "train_accuracy": res.train_accuracy,
                         "test_accuracy": res.test_accuracy, "final_loss": res.losses[-1]}
    _write_index(paths.models, entries)
    return paths.models


def build_controls(cfg: Config, paths: Paths) -> Path:
    """Cascading and independent randomized-weight copies of the trained model (Adebayo et al. 2018)."""
    ds, _ = load_saved(paths.dataset)
    trained = load_model(paths.models / f"{model_file(TRAINED)}.pt")
    meta = json.loads((paths.models / f"{model_file(TRAINED)}.json").read_text())
    controls: dict[str, torch.nn.Module] = {}
    if cfg.controls.cascading:
        controls.update(cascading_controls(trained, cfg.seed))
    if cfg.controls.independent:
        controls.update(independent_controls(trained, cfg.seed))
    paths.controls.mkdir(parents=True, exist_ok=True)
    for old in paths.controls.glob("*.pt"):
        old.unlink()
    entries = {}
    for name, model in controls.items():
        stem = model_file(name)
        save_model(model, paths.controls / f"{stem}.pt", arch=meta["arch"], input_shape=tuple(meta["input_shape"]),
                   n_classes=meta["n_classes"])
        entries[name] = {"file": f"{stem}.pt", "test_accuracy": accuracy(model, ds.x_test, ds.y_test),
                         "train_accuracy": accuracy(model, ds.x_train, ds.y_train)}
    _write_index(paths.controls, entries)
    return paths.controls


def survey_models(paths: Paths) -> dict[str, Path]:
    """Every model the survey explains, in archive order: trained, random_labels, then the controls."""
    out: dict[str, Path] = {}
    for directory in (paths.models, paths.controls):
        for name, entry in read_index(directory).items():
            out[name] = directory / entry["file"]
    order = [TRAINED, RANDOM_LABELS]
    return {k: out[k] for k in order + [k for k in out if k not in order]}
