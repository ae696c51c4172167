"""The data, train and controls stages: the datasets, the trained models and their randomized controls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from xaicore.atomic import write_text
from xaicore.config import Config
from xaicore.data import load_dataset, load_saved, randomized_labels, save_dataset
from xaicore.errors import XaiCoreError
from xaicore.models import (
    ModelSpec,
    accuracy,
    cascading_controls,
    independent_controls,
    load_model,
    load_weights,
    save_model,
    train_model,
)
from xaicore.outputs import RANDOM_LABELS, TRAINED, Paths, model_file, read_index  # noqa: F401  (pipeline names)
from xaicore.pipeline.cluster import dask_client
from xaicore.pipeline.runner import Job, run_jobs
from xaicore.threads import compute_threads, with_compute_threads


def preflight(cfg: Config) -> None:
    """Fail early, with one clear error, on input the run would only trip over later (missing data)."""
    d = cfg.data
    if d.dataset == "mnist":
        from xaicore.data.mnist import check_mnist_dir

        check_mnist_dir(d.root)
    elif d.dataset == "imagefolder" and not Path(d.root).is_dir():
        raise XaiCoreError(f"params.yaml: data.root {d.root} is not a folder; data.dataset imagefolder reads one "
                           "subfolder of images per class from it")
    elif d.dataset == "npz" and not Path(d.root).is_file():
        raise XaiCoreError(f"params.yaml: data.root {d.root} is not a file; data.dataset npz reads arrays x, y "
                           "from it")
    if cfg.model.weights is not None and not Path(cfg.model.weights).is_file():
        raise XaiCoreError(f"params.yaml: model.weights {cfg.model.weights} is not a file; it is the state_dict of "
                           f"the {cfg.model.source} model {cfg.model.arch} (torch.save(net.state_dict(), path))")


@with_compute_threads
def prepare_data(cfg: Config, paths: Paths) -> Path:
    """Materialize the configured dataset and its randomized-label training copy (one ``.npz``)."""
    d = cfg.data
    ds = load_dataset(d.dataset, root=d.root, size=d.size, test_fraction=d.test_fraction, seed=cfg.seed,
                      resize=d.resize, channels=d.channels)
    save_dataset(ds, paths.dataset, y_train_random=randomized_labels(ds.y_train, cfg.seed).numpy())
    return paths.dataset


def _write_index(directory: Path, entries: dict[str, dict[str, Any]]) -> None:
    write_text(directory / "index.json", json.dumps(entries, indent=1))


def train_one(dataset: str, arch: ModelSpec, labels: str, epochs: int, batch_size: int, lr: float,
              seed: int) -> tuple[dict[str, torch.Tensor], float, float, float]:
    """One training run of the train stage on the saved dataset (``labels``: ``y_train`` or ``y_train_random``):
    (weights, train accuracy, test accuracy, final loss). A job of :func:`~xaicore.pipeline.runner.run_jobs`, so
    it runs under the contract's thread settings whichever process runs it."""
    ds, extra = load_saved(dataset)
    y = ds.y_train if labels == "y_train" else torch.as_tensor(extra[labels])
    res = train_model(arch, ds.x_train, y, n_classes=ds.n_classes, epochs=epochs, batch_size=batch_size, lr=lr,
                      seed=seed, x_test=ds.x_test, y_test=ds.y_test, progress=False)
    return res.model.state_dict(), res.train_accuracy, res.test_accuracy, res.losses[-1]


def train_models(cfg: Config, paths: Paths, *, progress: bool = True) -> Path:
    """Train the survey's model on the true labels, the data-randomization control on permuted labels, and the
    ``model.zoo`` architectures on the true labels: one job each (:func:`~xaicore.pipeline.runner.run_jobs`) on
    ``model.workers`` Dask workers (in this process when it is 0), the longest first. With ``model.weights`` the
    survey's model is the given network (loaded, not trained); the random-label control retrains its
    architecture from scratch on the permuted training labels."""
    with compute_threads():
        return _train_models(cfg, paths, progress)


def _train_models(cfg: Config, paths: Paths, progress: bool) -> Path:
    ds, _ = load_saved(paths.dataset)
    m = cfg.model
    spec = m.spec
    paths.models.mkdir(parents=True, exist_ok=True)
    runs = [] if m.weights is not None else [(TRAINED, spec, "y_train", m.epochs, m.lr, cfg.seed)]
    runs.append((RANDOM_LABELS, spec, "y_train_random", m.random_labels_epochs, m.random_labels_lr, cfg.seed + 1))
    zoo_epochs = m.epochs if m.zoo_epochs is None else m.zoo_epochs
    runs += [(f"zoo:{arch}", ModelSpec("zoo", arch), "y_train", zoo_epochs, m.lr, cfg.seed) for arch in m.zoo]
    cost = {"cnn": 1.0, "mlp": 0.3}  # per epoch, roughly; the deeper zoo and the user's networks: 6
    jobs = [Job(i, train_one, (str(paths.dataset), arch, labels, epochs, m.batch_size, lr, seed),
                cost=cost.get(arch.arch, 6.0) * epochs, record=False)
            for i, (_, arch, labels, epochs, lr, seed) in enumerate(runs)]
    results: dict[int, tuple[dict[str, torch.Tensor], float, float, float]] = {}
    bar = tqdm(total=len(runs), desc="train", unit="model", disable=not progress)

    def done(job: Job, result: tuple[dict[str, torch.Tensor], float, float, float]) -> None:
        results[job.key] = result
        bar.update()
        bar.set_postfix(model=runs[job.key][0])

    with dask_client(m.workers, cfg.score.scheduler) as client:
        run_jobs(jobs, on_result=done, client=client)
    bar.close()
    entries: dict[str, dict[str, Any]] = {}
    if m.weights is not None:
        model = load_weights(spec, m.weights, ds.input_shape, ds.n_classes)
        save_model(model, paths.models / f"{model_file(TRAINED)}.pt", arch=spec, input_shape=ds.input_shape,
                   n_classes=ds.n_classes, weights=str(m.weights))
        entries[TRAINED] = {"file": f"{model_file(TRAINED)}.pt", "train_accuracy": accuracy(model, ds.x_train,
                            ds.y_train), "test_accuracy": accuracy(model, ds.x_test, ds.y_test),
                            "final_loss": None, "weights": str(m.weights)}
    for i, (name, arch, *_) in enumerate(runs):
        weights, train_acc, test_acc, loss = results[i]
        model = arch.build(ds.input_shape, ds.n_classes)
        model.load_state_dict(weights)
        stem = model_file(name)
        save_model(model, paths.models / f"{stem}.pt", arch=arch, input_shape=ds.input_shape, n_classes=ds.n_classes)
        entries[name] = {"file": f"{stem}.pt", "train_accuracy": train_acc, "test_accuracy": test_acc,
                         "final_loss": loss}
    order_names = [TRAINED, RANDOM_LABELS]
    _write_index(paths.models, {k: entries[k] for k in order_names + [k for k in entries if k not in order_names]})
    return paths.models


def build_controls(cfg: Config, paths: Paths) -> Path:
    """Cascading and independent randomized-weight copies of the trained model (Adebayo et al. 2018), with their
    accuracies (computed under the contract's thread settings)."""
    with compute_threads():
        return _build_controls(cfg, paths)


def _build_controls(cfg: Config, paths: Paths) -> Path:
    ds, _ = load_saved(paths.dataset)
    trained = load_model(paths.models / f"{model_file(TRAINED)}.pt")
    meta = json.loads((paths.models / f"{model_file(TRAINED)}.json").read_text())
    controls: dict[str, torch.nn.Module] = {}
    layers = cfg.controls.layers
    if cfg.controls.cascading:
        controls.update(cascading_controls(trained, cfg.seed, layers))
    if cfg.controls.independent:
        controls.update(independent_controls(trained, cfg.seed, layers))
    paths.controls.mkdir(parents=True, exist_ok=True)
    for old in paths.controls.glob("*.pt"):
        old.unlink()
    entries = {}
    for name, model in controls.items():
        stem = model_file(name)
        save_model(model, paths.controls / f"{stem}.pt", arch=ModelSpec.from_meta(meta),
                   input_shape=tuple(meta["input_shape"]), n_classes=meta["n_classes"])
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
