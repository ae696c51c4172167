"""Heatmap PNGs of image files, no pipeline: what ``xaicore explain`` does (:func:`explain_images`), with a model
the survey saved or a researcher's own state_dict (``arch``), method parameters given as ``METHOD.KEY=VALUE``
(:func:`parse_method_params`) and the class names in the titles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xaicore.errors import XaiCoreError


def _read_image(path: Path, shape: tuple[int, ...]) -> Any:
    """An image file as the model's (C, H, W) input in [0, 1]: its channels, and, at another size, the shorter side
    scaled to H and the centre cropped, as ``data.resize`` prepares a data set."""
    import torch

    from xaicore.data.files import IMAGE_SUFFIXES, read_image

    if path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES:
        raise XaiCoreError(f"{path} is not an image file ({', '.join(IMAGE_SUFFIXES)})")
    c, h, w = shape
    if h != w:
        raise XaiCoreError(f"the model takes {h}x{w} inputs; xaicore explain prepares square images only")
    return torch.from_numpy(read_image(path, size=h, resize=h, channels=c))


def _last_linear_outputs(state: dict[str, Any]) -> int | None:
    """The output size of a state_dict's last 2-D weight (the classifier's rows), or None."""
    last = [v for k, v in state.items() if k.endswith("weight") and getattr(v, "ndim", 0) == 2]
    return int(last[-1].shape[0]) if last else None


def _user_model(weights: str | Path, arch: str, input_shape: tuple[int, int, int], n_classes: int | None,
                mean: Sequence[float] | None, std: Sequence[float] | None) -> tuple[Any, int]:
    """A researcher's own network: ``arch`` (a torchvision name, or a ``module:function`` / ``file.py:function``
    builder) with the state_dict ``weights``; the class count from ``n_classes`` or the weights' classifier."""
    from xaicore._weights import load_tensors
    from xaicore.models.spec import ModelSpec, load_weights

    source = "file" if ":" in arch else "torchvision"
    spec = ModelSpec(source, arch, {}, tuple(mean) if mean else None, tuple(std) if std else None)
    spec.check()
    if n_classes is None:
        state = load_tensors(weights, "model weights (--model)", "with a state_dict file saved by torch.save")
        n_classes = _last_linear_outputs(state) if isinstance(state, dict) else None
        if n_classes is None:
            raise XaiCoreError(f"--model {weights}: cannot tell its number of classes; pass --class-names")
    return load_weights(spec, weights, input_shape, n_classes), n_classes


def parse_method_params(items: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``METHOD.KEY=VALUE`` items (``lime.n_samples=500``, ``lrp.epsilon.epsilon=0.1``, ``gradcam.layer=layer3``;
    the value read as YAML) as ``{method: {key: value}}``; the method is one of ``methods``, the key one of its
    parameters."""
    import yaml

    from xaicore.explain import get_explainer

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, eq, raw = item.partition("=")
        method, _, key = name.rpartition(".")
        if not eq or not method or not key:
            raise XaiCoreError(f"--param {item!r} must be METHOD.KEY=VALUE, e.g. lime.n_samples=500")
        if method not in methods:
            raise XaiCoreError(f"--param {item!r}: {method!r} is not one of the --method given "
                               f"({', '.join(methods)})")
        known = get_explainer(method).defaults
        if key not in known:
            raise XaiCoreError(f"--param {item!r}: {method} has no parameter {key!r}; its parameters: "
                               f"{', '.join(sorted(known)) or 'none'}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        out.setdefault(method, {})[key] = value
    return out


def explain_images(model_path: str | Path, methods: Sequence[str], images: Sequence[str | Path],
                   out: str | Path, *, target: int | None = None, fit_data: str | Path | None = None,
                   progress: bool = True, arch: str | None = None, size: int = 224, channels: int = 3,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   class_names: Sequence[str] | None = None,
                   method_params: dict[str, dict[str, Any]] | None = None) -> list[Path]:
    """Heatmaps of ``methods`` for each image file, written as ``<out>/<image>.<method>.png`` (the input beside
    the heatmap, red/blue centred at 0, titled with the class name). The model: one the survey saved at
    ``model_path`` (with its ``.json``), or with ``arch`` a researcher's state_dict file of that architecture
    (torchvision name or builder) taking ``channels``×``size``×``size`` images, behind ``mean``/``std``. The
    target is ``target`` or the model's prediction. ``method_params``: keywords per method. Methods fitted on data
    are fitted on ``fit_data``'s training images (a saved ``dataset.npz``). Returns the PNG paths."""
    import json

    import torch
    from tqdm import tqdm

    from xaicore.explain import explanation, get_explainer
    from xaicore.explain import fit as fit_method
    from xaicore.explain.registry import call_keywords, fit_params
    from xaicore.models.io import load_model

    exps = [get_explainer(m) for m in methods]  # unknown methods: refused before any work
    needs_fit = [e.name for e in exps if e.fit is not None]
    if needs_fit and fit_data is None:
        raise XaiCoreError(f"{', '.join(needs_fit)} must be fitted on training data: pass --fit-data "
                           "outputs/data/dataset.npz (a saved data set)")
    method_params = method_params or {}
    if arch is not None:
        if not Path(model_path).is_file():
            raise XaiCoreError(f"--model {model_path} does not exist")
        shape: tuple[int, ...] = (int(channels), int(size), int(size))
        model, n_classes = _user_model(model_path, arch, shape, len(class_names) if class_names else None,
                                       mean, std)
        names = list(class_names) if class_names else None
    else:
        if Path(model_path).is_file() and not Path(model_path).with_suffix(".json").is_file():
            raise XaiCoreError(f"--model {model_path} has no {Path(model_path).with_suffix('.json').name} beside "
                               "it (a model the survey saved); for your own state_dict file name its architecture: "
                               "--arch resnet18 (torchvision) or --arch my_module:build")
        model = load_model(model_path)
        meta = json.loads(Path(model_path).with_suffix(".json").read_text())
        shape = tuple(meta["input_shape"])
        n_classes = int(meta["n_classes"])
        names = list(class_names) if class_names else meta.get("class_names")
    if names is not None and len(names) != n_classes:
        raise XaiCoreError(f"--class-names gives {len(names)} names, the model has {n_classes} classes")
    x = torch.stack([_read_image(Path(p), shape) for p in images])
    with torch.no_grad():
        logits = model(x)
    if target is not None and not 0 <= target < logits.shape[1]:
        raise XaiCoreError(f"target {target} is not a class of the model (0..{logits.shape[1] - 1})")
    t = torch.full((x.shape[0],), target) if target is not None else logits.argmax(1)
    states: dict[str, Any] = {}
    if needs_fit:
        from xaicore.data import load_saved

        ds, _ = load_saved(fit_data)  # type: ignore[arg-type]
        if tuple(ds.input_shape) != shape:
            raise XaiCoreError(f"--fit-data {fit_data} holds {tuple(ds.input_shape)} images, the model takes {shape}")
        states = {m: fit_method(model, ds.x_train, m, **fit_params(m, method_params.get(m, {}))) for m in needs_fit}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for m in tqdm(methods, desc="explain", unit="method", disable=not progress):
        rel = explanation(model, x, t, m, **call_keywords(m, method_params.get(m, {}), state=states.get(m))).relevance
        for i, p in enumerate(images):
            c = int(t[i])
            label = f"{names[c]} (class {c})" if names else f"class {c}"
            written.append(_heatmap_png(x[i].numpy(), rel[i].numpy(), out / f"{Path(p).stem}.{m}.png",
                                        f"{m} — {label}, logit {float(logits[i, c]):.3g}"))
    return written


def _heatmap_png(x: Any, rel: Any, path: Path, title: str) -> Path:
    from xaicore.report.canvas import plt
    from xaicore.report.canvas import save as _save
    from xaicore.report.grids import heatmap_rgb, input_rgb

    fig, axes = plt.subplots(1, 2, figsize=(4.4, 2.4))
    axes[0].imshow(input_rgb(x))
    axes[1].imshow(heatmap_rgb(rel))
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_title("input", fontsize=8)
    axes[1].set_title("red +, blue −", fontsize=8)
    fig.suptitle(title, fontsize=8)
    return _save(fig, path)
