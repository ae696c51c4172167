"""params.yaml -> frozen, picklable dataclasses.

Every section rejects unknown keys, wrong types and impossible values with one
:class:`~xaicore.errors.XaiCoreError` whose message names the key (``params.yaml: score.region ...``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from xaicore.data.sources import IMAGE_DATASETS, TABULAR_DATASETS, TEXT_DATASETS
from xaicore.engine import SCORES
from xaicore.errors import XaiCoreError
from xaicore.features.fills import PERTURBATIONS
from xaicore.kernels import BACKENDS
from xaicore.metrics.aopc import ORDERS
from xaicore.metrics.roar import FILLS, MODES
from xaicore.metrics.sanity import SIMILARITY_MEASURES
from xaicore.models.spec import SOURCES
from xaicore.models.zoo import ARCHS as ZOO_ARCHS

if typing.TYPE_CHECKING:
    from xaicore.models.spec import ModelSpec

# the choices params.yaml takes are the library's own names, declared once there
DATASETS = IMAGE_DATASETS
ARCHS = tuple(ZOO_ARCHS)
SANITY_MEASURES = SIMILARITY_MEASURES
ROAR_MODES = MODES
DEVICES = ("cpu", "cuda")


def _fail(key: str, msg: str) -> XaiCoreError:
    return XaiCoreError(f"params.yaml: {key} {msg}")


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _fail(key, f"is {value!r}; expected one of {', '.join(allowed)}")


def _positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise _fail(key, f"is {value!r}; expected a {'non-negative' if allow_zero else 'positive'} number")


MAX_WORKERS = 512


def _workers(key: str, value: int) -> None:
    _positive(key, value, allow_zero=True)
    if value > MAX_WORKERS:
        raise _fail(key, f"is {value!r}; expected at most {MAX_WORKERS} Dask workers")


def _address(key: str, value: str | None) -> None:
    if value is not None and not re.fullmatch(r"([a-z]+://)?[\w.\-\[\]:]+:\d+", value):
        raise _fail(key, f"is {value!r}; expected a Dask scheduler address such as tcp://127.0.0.1:8786")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    root: str = "data/mnist"
    size: int = 28
    test_fraction: float = 0.2
    n_explain: int | None = 256
    #: imagefolder: scale each image's shorter side to this, then centre-crop ``size`` (null: images are size x size)
    resize: int | None = None
    #: imagefolder: 1 (grey) or 3 (RGB, the default); npz images keep their channels
    channels: int | None = None

    def validate(self) -> None:
        _choice("data.dataset", self.dataset, DATASETS)
        _positive("data.size", self.size)
        if self.resize is not None:
            _positive("data.resize", self.resize)
            if self.resize < self.size:
                raise _fail("data.resize", f"is {self.resize}, smaller than data.size {self.size}; the shorter side "
                                           "is scaled to resize and the centre size x size cropped")
        if self.channels is not None and self.channels not in (1, 3):
            raise _fail("data.channels", f"is {self.channels!r}; expected 1 (grey), 3 (RGB) or null")
        if self.dataset != "imagefolder":
            for key in ("resize", "channels"):
                if getattr(self, key) is not None:
                    raise _fail(f"data.{key}", f"applies to data.dataset imagefolder, not {self.dataset}; set null")
        if not 0.0 < self.test_fraction < 1.0:
            raise _fail("data.test_fraction", f"is {self.test_fraction!r}; expected a fraction in (0, 1)")
        if self.n_explain is not None:
            _positive("data.n_explain", self.n_explain)


@dataclasses.dataclass(frozen=True)
class NormalizeConfig:
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    #: zoo (xaicore.models.zoo) | torchvision (torchvision.models by name) | file (module:function or file.py:function)
    source: str = "zoo"
    arch: str = "cnn"
    #: a state_dict file of the network: the trained model is loaded from it and the train stage does not train it
    weights: str | None = None
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)  # the torchvision/file builder's keywords
    #: per-channel input normalization, part of the model (heatmaps stay on pixels in [0, 1])
    normalize: NormalizeConfig | None = None
    epochs: int = 12
    batch_size: int = 64
    lr: float = 0.002
    random_labels_epochs: int = 100
    random_labels_lr: float = 0.001
    #: further architectures trained on the true labels and explained beside the survey model (``zoo:<arch>``)
    zoo: tuple[str, ...] = ()
    zoo_epochs: int | None = None  # epochs of the zoo models (null: ``epochs``)
    workers: int = 2  # Dask workers, one training run each (score.scheduler, if set, instead); 0 = in process

    @property
    def spec(self) -> ModelSpec:
        """The :class:`~xaicore.models.spec.ModelSpec` of the survey's model."""
        from xaicore.models.spec import ModelSpec

        n = self.normalize
        return ModelSpec(self.source, self.arch, dict(self.kwargs), n.mean if n else None, n.std if n else None)

    def validate(self) -> None:
        _choice("model.source", self.source, SOURCES)
        if self.source == "zoo":
            _choice("model.arch", self.arch, ARCHS)
        if self.source == "zoo" and self.kwargs:
            raise _fail("model.kwargs", "applies to model.source torchvision or file; set {}")
        try:
            self.spec.check()
        except XaiCoreError as e:
            raise XaiCoreError(f"params.yaml: {e}") from None
        for a in self.zoo:
            _choice("model.zoo", a, ARCHS)
        if len(set(self.zoo)) != len(self.zoo):
            raise _fail("model.zoo", "lists an architecture twice")
        if self.zoo_epochs is not None:
            _positive("model.zoo_epochs", self.zoo_epochs)
        for key in ("epochs", "batch_size", "lr", "random_labels_epochs", "random_labels_lr"):
            _positive(f"model.{key}", getattr(self, key))
        _workers("model.workers", self.workers)


@dataclasses.dataclass(frozen=True)
class ControlsConfig:
    cascading: bool = True
    independent: bool = True
    #: the modules randomized, by name (e.g. a ResNet's conv1, layer1 ... layer4, fc); null: every parameter layer
    layers: tuple[str, ...] | None = None

    def validate(self) -> None:
        if self.layers is not None:
            if not self.layers or not all(self.layers):
                raise _fail("controls.layers", "must list module names (or be null: every parameter layer)")
            if len(set(self.layers)) != len(self.layers):
                raise _fail("controls.layers", "lists a layer twice")


def _check_method_params(key: str, params: dict[str, Any]) -> None:
    """``params``: registered method -> {keyword: value} of keywords the method (or its fit) takes."""
    from xaicore.explain import get_explainer
    from xaicore.explain import methods as registered

    known = registered()
    for name, kw in params.items():
        if name not in known:
            raise _fail(f"{key}.{name}", f"is not a registered method ({', '.join(known)})")
        if not isinstance(kw, dict):
            raise _fail(f"{key}.{name}", "must be a mapping of keyword -> value")
        ex = get_explainer(name)
        allowed = {**ex.defaults, **ex.fit_defaults}
        unknown = sorted(set(kw) - set(allowed))
        if unknown:
            raise _fail(f"{key}.{name}", f"has unknown parameter {', '.join(map(repr, unknown))}"
                        f"; {name} takes: {', '.join(allowed) or 'none'}")


@dataclasses.dataclass(frozen=True)
class ExplainConfig:
    methods: tuple[str, ...] = ("gradient", "gradient_x_input", "integrated_gradients", "random")
    batch_size: int = 128
    chunk: int = 128
    method_params: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    workers: int = 2  # Dask workers (a local cluster, or score.scheduler); 0 = run in this process
    # samples per explain call of a method instead of batch_size; below `chunk` a chunk becomes several jobs
    batch_sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    # per-model sample budget: {model name or shell pattern: n}; such a model explains the first n of the explained
    # samples (its other heatmaps are NaN in the archive); the first pattern that matches a model counts
    samples: dict[str, int] = dataclasses.field(default_factory=dict)

    def batch_of(self, method: str) -> int:
        """Samples per explain call (and per explain-stage job, at most ``chunk``) of ``method``."""
        return self.batch_sizes.get(method, self.batch_size)

    def validate(self) -> None:
        from xaicore.explain import methods as registered

        known = registered()
        if not self.methods:
            raise _fail("explain.methods", "is empty; name at least one method")
        for name in self.methods:
            if name not in known:
                raise _fail("explain.methods", f"names unknown method {name!r}; registered: {', '.join(known)}")
        if len(set(self.methods)) != len(self.methods):
            raise _fail("explain.methods", "lists a method twice")
        _check_method_params("explain.method_params", self.method_params)
        _positive("explain.batch_size", self.batch_size)
        for name, size in self.batch_sizes.items():
            if name not in known:
                raise _fail(f"explain.batch_sizes.{name}", f"is not a registered method ({', '.join(known)})")
            _positive(f"explain.batch_sizes.{name}", size)
        _positive("explain.chunk", self.chunk)
        _workers("explain.workers", self.workers)
        for pattern, n in self.samples.items():
            _positive(f"explain.samples.{pattern}", n)


@dataclasses.dataclass(frozen=True)
class PatternsConfig:
    """PatternNet/PatternAttribution's signal estimators (Kindermans et al. 2018), fitted on the training set."""

    batch_size: int = 256  # samples per batch of the statistics pass
    ridge: float = 1e-6  # of the closed-form ρ(S): λ = ridge · tr(cov[x, x]) / dim
    #: ρ(S) per layer (inverts cov[x, x] of each layer's input: ~1 min a model for ResNet-18's 4608-dim layer4)
    quality: bool = True

    def validate(self) -> None:
        _positive("patterns.batch_size", self.batch_size)
        _positive("patterns.ridge", self.ridge, allow_zero=True)


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
    """The convolutional autoencoder of CEM's reconstruction term and the maximisers' generator, fitted on the
    training set by the ``autoencoder`` stage (``xaicore.explain.optimisation.fit_autoencoder``)."""

    latent: int = 16
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.002
    code_penalty: float = 0.001  # weight of the mean ‖z‖² beside the reconstruction error

    def validate(self) -> None:
        for key in ("latent", "epochs", "batch_size", "lr"):
            _positive(f"autoencoder.{key}", getattr(self, key))
        _positive("autoencoder.code_penalty", self.code_penalty, allow_zero=True)


@dataclasses.dataclass(frozen=True)
class MaximizeConfig:
    """Activation maximisation of every class logit (``xaicore.analysis.maximize``), the ``maximize`` stage."""

    models: tuple[str, ...] = ("trained", "random_labels", "cascade:*")  # survey models (shell patterns)
    parameterizations: tuple[str, ...] = ("pixels", "generator")
    pixels: dict[str, Any] = dataclasses.field(default_factory=lambda: {
        "lr": 0.1, "n_steps": 300, "l2": 1e-3, "jitter": 1, "blur_every": 8, "blur_sigma": 0.5})
    generator: dict[str, Any] = dataclasses.field(default_factory=lambda: {"lr": 0.05, "n_steps": 200, "l2": 1e-3})

    def validate(self) -> None:
        from xaicore.analysis import PARAMETERIZATIONS

        if not self.models:
            raise _fail("maximize.models", "is empty; expected survey model names (e.g. trained)")
        for p in self.parameterizations:
            if p not in PARAMETERIZATIONS:
                raise _fail("maximize.parameterizations", f"has {p!r}; expected some of {', '.join(PARAMETERIZATIONS)}")
        from xaicore.analysis.maximize import check_maximize_params

        known = {"n_steps", "lr", "l2", "tv", "jitter", "blur_every", "blur_sigma", "radius", "data_range"}
        for section in ("pixels", "generator"):
            unknown = sorted(set(getattr(self, section)) - known)
            if unknown:
                raise _fail(f"maximize.{section}.{unknown[0]}", f"is not a parameter of maximize (known: "
                                                                f"{', '.join(sorted(known))})")
            try:
                check_maximize_params(section, getattr(self, section))
            except XaiCoreError as e:  # "lr='' must be a number" -> "params.yaml: maximize.pixels.lr='' must ..."
                raise XaiCoreError(f"params.yaml: maximize.{section}.{e}") from None


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    models: tuple[str, ...] = ("trained", "random_labels")
    region: int | None = 4  # side of the AOPC squares in pixels; null: a seventh of the image side (<= 7 x 7 squares)
    orders: tuple[str, ...] = ORDERS
    perturbations: tuple[str, ...] = ("uniform",)
    faithfulness: bool = True
    score: str = "logit"
    backend: str = "auto"
    device: str = "cpu"
    workers: int = 2
    scheduler: str | None = None

    def validate(self) -> None:
        if not self.models:
            raise _fail("score.models", "is empty; name at least one model (trained, random_labels, cascade:...)")
        if self.region is not None:
            _positive("score.region", self.region)
        if not self.orders:
            raise _fail("score.orders", "is empty")
        for o in self.orders:
            _choice("score.orders", o, ORDERS)
        if not self.perturbations:
            raise _fail("score.perturbations", "is empty")
        for p in self.perturbations:
            _choice("score.perturbations", p, PERTURBATIONS)
        _choice("score.score", self.score, SCORES)
        _choice("score.backend", self.backend, BACKENDS)
        _choice("score.device", self.device, DEVICES)
        _workers("score.workers", self.workers)
        _address("score.scheduler", self.scheduler)


@dataclasses.dataclass(frozen=True)
class SanityConfig:
    measures: tuple[str, ...] = SANITY_MEASURES

    def validate(self) -> None:
        for m in self.measures:
            _choice("sanity.measures", m, SANITY_MEASURES)


@dataclasses.dataclass(frozen=True)
class InvarianceConfig:
    """Kindermans et al.'s input-invariance check: network 2 sees x + m, m = a training image times ``scale``."""

    enabled: bool = True
    model: str = "zoo:mlp"  # Kindermans et al. use an MLP; on a CNN, max-pool ties break differently
    shift_image: int = 0
    scale: float = 1.0

    def validate(self) -> None:
        _positive("invariance.shift_image", self.shift_image, allow_zero=True)


@dataclasses.dataclass(frozen=True)
class RoarConfig:
    """Hooker et al.'s ROAR/KAR: retrain on degraded data (its own, expensive DVC stage)."""

    methods: tuple[str, ...] = ("gradient", "gradient_x_input", "integrated_gradients", "random")
    modes: tuple[str, ...] = ROAR_MODES
    fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    repeats: int = 1
    full: bool = False  # true: Hooker et al.'s five retrained models per method and fraction
    epochs: int = 6
    workers: int = 2  # Dask workers, one retraining each (score.scheduler, if set, is used instead); 0 = in process
    # what replaces a removed pixel (xaicore.metrics.FILLS): the `roar` mode is run with each, `kar` with the first
    fills: tuple[str, ...] = ("mean",)
    # per method, over explain.method_params, for ROAR's heatmaps only (e.g. smoothgrad: {squared: true})
    method_params: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def n_repeats(self) -> int:
        return 5 if self.full else self.repeats

    def validate(self) -> None:
        from xaicore.explain import methods as registered

        for m in self.methods:
            if m not in registered():
                raise _fail("roar.methods", f"names unknown method {m!r}; registered: {', '.join(registered())}")
        if "random" not in self.methods:
            raise _fail("roar.methods", "must include random, the baseline every method must beat")
        for m in self.modes:
            _choice("roar.modes", m, ROAR_MODES)
        for t in self.fractions:
            if not 0.0 < t < 1.0:
                raise _fail("roar.fractions", f"holds {t}; expected fractions in (0, 1)")
        if not self.fills:
            raise _fail("roar.fills", f"is empty; name at least one of {', '.join(FILLS)}")
        for f in self.fills:
            _choice("roar.fills", f, FILLS)
        if len(set(self.fills)) != len(self.fills):
            raise _fail("roar.fills", "lists a fill twice")
        _check_method_params("roar.method_params", self.method_params)
        _positive("roar.repeats", self.repeats)
        _positive("roar.epochs", self.epochs)
        _workers("roar.workers", self.workers)


@dataclasses.dataclass(frozen=True)
class SprayConfig:
    """SpRAy (``xaicore.analysis.spray``) of the planted model's heatmaps of the watermarked class."""

    method: str = "lrp.epsilon_plus"  # one of analysis.methods
    size: int = 7  # maps block-summed to size×size (7: cells of 4 px on 28, the watermark's size)
    n_neighbors: int = 10
    k_max: int = 10


@dataclasses.dataclass(frozen=True)
class TcavConfig:
    """TCAV (``xaicore.analysis.tcav``) of the planted concepts for every class."""

    layers: tuple[str, ...] = ("conv2", "fc1")
    n_examples: int = 50  # per concept and random set
    n_random: int = 10
    classifier: str = "sgd"
    alpha: float = 0.05  # Bonferroni-corrected over concepts × layers


@dataclasses.dataclass(frozen=True)
class DissectConfig:
    """Network Dissection (``xaicore.analysis.dissect``) on generated images with concept masks."""

    layers: tuple[str, ...] = ("conv1", "conv2")
    n_images: int = 500
    quantile: float = 0.995
    threshold: float = 0.04


@dataclasses.dataclass(frozen=True)
class TruthConfig:
    """The survey's metrics judged against the causal ground truth of the planted watermark
    (``xaicore.metrics.truth``), on models trained in the watermark's regimes (``xaicore.data.planted``)."""

    regimes: tuple[str, ...] = ("absent", "confound", "noise")  # confound is the analysis's model
    methods: tuple[str, ...] = (
        "gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "deconvnet", "guided_backprop",
        "gradcam", "lrp.epsilon", "lrp.alpha_beta", "lrp.epsilon_plus", "patternattribution", "occlusion", "lime",
        "random")
    n_images: int = 32  # clean test digits with the watermark drawn on (four intensities in turn)
    n_boot: int = 1000  # bootstrap resamples of the images for Kendall tau's CI
    workers: int = 2  # Dask workers for the metrics (score.scheduler, if set, instead); 0 = in process


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    """The meta methods of §7 on the planted digits (``xaicore.data.planted``): the ``planted`` stage trains a
    model on them, the ``analysis`` stage explains it (localisation, SpRAy), and runs TCAV and dissection."""

    hans_class: int = 0  # the class with the Clever-Hans watermark
    texture_class: int = 1  # the class trained to depend on stripes
    arch: str = "cnn"
    epochs: int = 12
    methods: tuple[str, ...] = (
        "gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "deeplift", "deconvnet",
        "guided_backprop", "gradcam", "excitation_backprop", "lrp.z", "lrp.epsilon", "lrp.alpha_beta",
        "lrp.epsilon_plus", "lrp.epsilon_plus_flat", "lrp.epsilon_gamma_box", "lrp.epsilon_alpha2_beta1", "taylor",
        "dtd.w2", "dtd.zplus", "dtd.zb", "patternnet", "patternattribution", "occlusion", "lime", "pda", "cem.pp",
        "cem.pn", "random")
    spray: SprayConfig = dataclasses.field(default_factory=SprayConfig)
    tcav: TcavConfig = dataclasses.field(default_factory=TcavConfig)
    dissect: DissectConfig = dataclasses.field(default_factory=DissectConfig)
    truth: TruthConfig = dataclasses.field(default_factory=TruthConfig)

    def validate(self) -> None:
        from xaicore.analysis.tcav import ADVISED_RANDOMS, CLASSIFIERS, MIN_EXAMPLES
        from xaicore.explain.registry import methods as registered
        from xaicore.models.zoo import ARCHS

        for key, cls in (("analysis.hans_class", self.hans_class), ("analysis.texture_class", self.texture_class)):
            if not 0 <= cls <= 9:
                raise _fail(key, f"is {cls}; expected a digit class 0..9")
        if self.hans_class == self.texture_class:
            raise _fail("analysis.texture_class", "equals analysis.hans_class; the planted cues need two classes")
        _choice("analysis.arch", self.arch, tuple(ARCHS))
        _positive("analysis.epochs", self.epochs)
        if not self.methods:
            raise _fail("analysis.methods", "is empty; expected heatmap methods (e.g. lrp.epsilon_plus)")
        for m in self.methods:
            _choice("analysis.methods", m, tuple(registered()))
        if self.spray.method not in self.methods:
            raise _fail("analysis.spray.method", f"is {self.spray.method!r}, which analysis.methods does not list")
        for key in ("size", "n_neighbors", "k_max"):
            _positive(f"analysis.spray.{key}", getattr(self.spray, key))
        if not self.tcav.layers or not self.dissect.layers:
            raise _fail("analysis.tcav.layers" if not self.tcav.layers else "analysis.dissect.layers",
                        "is empty; expected layer names of the model (e.g. conv2)")
        if self.tcav.n_examples < MIN_EXAMPLES:
            raise _fail("analysis.tcav.n_examples", f"is {self.tcav.n_examples}; a CAV needs at least {MIN_EXAMPLES}")
        if self.tcav.n_random < 2:
            raise _fail("analysis.tcav.n_random", f"is {self.tcav.n_random}; the significance test needs at least 2 "
                                                  f"(Kim et al. use {ADVISED_RANDOMS} or more)")
        _choice("analysis.tcav.classifier", self.tcav.classifier, CLASSIFIERS)
        if not 0 < self.tcav.alpha < 1:
            raise _fail("analysis.tcav.alpha", f"is {self.tcav.alpha}; expected a level in (0, 1)")
        _positive("analysis.dissect.n_images", self.dissect.n_images)
        if not 0 < self.dissect.quantile < 1:
            raise _fail("analysis.dissect.quantile", f"is {self.dissect.quantile}; expected a quantile in (0, 1)")
        if not 0 <= self.dissect.threshold < 1:
            raise _fail("analysis.dissect.threshold", f"is {self.dissect.threshold}; expected an IoU in [0, 1)")
        from xaicore.data.planted import REGIMES

        for r in self.truth.regimes:
            _choice("analysis.truth.regimes", r, REGIMES)
        if "confound" not in self.truth.regimes or len(set(self.truth.regimes)) != len(self.truth.regimes):
            raise _fail("analysis.truth.regimes", f"is {list(self.truth.regimes)}; expected distinct regimes "
                                                  "including confound (the planted model of the analysis)")
        if len(set(self.truth.methods)) < 2:
            raise _fail("analysis.truth.methods", "needs at least two methods to rank")
        for m in self.truth.methods:
            _choice("analysis.truth.methods", m, tuple(registered()))
        _positive("analysis.truth.n_images", self.truth.n_images)
        _positive("analysis.truth.n_boot", self.truth.n_boot)
        _workers("analysis.truth.workers", self.truth.workers)


def _default_tabular_params() -> dict[str, dict[str, Any]]:
    return {"pda": {"measure": "info_diff"}, "lime": {"n_samples": 1000}, "anchors": {"threshold": 0.95}}


@dataclasses.dataclass(frozen=True)
class TabularConfig:
    """The tabular branch of §6 (the ``tabular`` stage): a table, an MLP trained on it, heatmaps per column of
    ``n_explain`` test rows (the model's predictions), feature-removal scores, explainVis and the anchors found."""

    dataset: str = "titanic"  # titanic (generated, known log-odds) | breast_cancer (embedded) | csv (the file root)
    root: str = ""
    label: str = "label"  # csv: the label column
    nominal: tuple[str, ...] | None = None  # csv: nominal columns (null: those with a non-numeric value)
    arch: str = "mlp"
    epochs: int = 10
    n_explain: int = 40
    methods: tuple[str, ...] = ("gradient", "gradient_x_input", "integrated_gradients", "lrp.epsilon", "occlusion",
                                "lime", "pda", "anchors", "random")
    method_params: dict[str, dict[str, Any]] = dataclasses.field(default_factory=_default_tabular_params)

    def validate(self) -> None:
        _validate_branch(self, "tabular", TABULAR_DATASETS)


def _default_text_params() -> dict[str, dict[str, Any]]:
    return {"lime": {"n_samples": 500}, "anchors": {"threshold": 0.95}}


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The text branch of §6 (the ``text`` stage): sentences, an embedding with a bag/conv/GRU head, heatmaps per
    token (gradient methods at the embedding), word-erasure scores and the anchors found."""

    dataset: str = "sentiment"  # sentiment (generated, known rule) | textfile (the file root: label<TAB>text)
    root: str = ""
    max_len: int | None = None  # tokens per sentence (null: the data set's default)
    arch: str = "bag"
    epochs: int = 8
    n_explain: int = 40
    methods: tuple[str, ...] = ("gradient", "gradient_x_input", "integrated_gradients", "occlusion", "lime",
                                "anchors", "random")
    method_params: dict[str, dict[str, Any]] = dataclasses.field(default_factory=_default_text_params)

    def validate(self) -> None:
        _validate_branch(self, "text", TEXT_DATASETS)
        if self.max_len is not None:
            _positive("text.max_len", self.max_len)


def _validate_branch(branch: Any, kind: str, datasets: tuple[str, ...]) -> None:
    from xaicore.explain import methods as registered
    from xaicore.models.embedding import FEATURE_ARCHS

    _choice(f"{kind}.dataset", branch.dataset, datasets)
    if branch.dataset in ("csv", "textfile") and not branch.root:
        raise _fail(f"{kind}.root", f"is empty; dataset {branch.dataset} reads the file it names")
    _choice(f"{kind}.arch", branch.arch, FEATURE_ARCHS[kind])
    _positive(f"{kind}.epochs", branch.epochs)
    _positive(f"{kind}.n_explain", branch.n_explain)
    if not branch.methods:
        raise _fail(f"{kind}.methods", "is empty; name at least one method")
    for m in branch.methods:
        _choice(f"{kind}.methods", m, tuple(registered()))
    if len(set(branch.methods)) != len(branch.methods):
        raise _fail(f"{kind}.methods", "lists a method twice")
    _check_method_params(f"{kind}.method_params", branch.method_params)


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    controls: ControlsConfig = dataclasses.field(default_factory=ControlsConfig)
    explain: ExplainConfig = dataclasses.field(default_factory=ExplainConfig)
    patterns: PatternsConfig = dataclasses.field(default_factory=PatternsConfig)
    autoencoder: AutoencoderConfig = dataclasses.field(default_factory=AutoencoderConfig)
    maximize: MaximizeConfig = dataclasses.field(default_factory=MaximizeConfig)
    score: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)
    sanity: SanityConfig = dataclasses.field(default_factory=SanityConfig)
    invariance: InvarianceConfig = dataclasses.field(default_factory=InvarianceConfig)
    roar: RoarConfig = dataclasses.field(default_factory=RoarConfig)
    analysis: AnalysisConfig = dataclasses.field(default_factory=AnalysisConfig)
    tabular: TabularConfig = dataclasses.field(default_factory=TabularConfig)
    text: TextConfig = dataclasses.field(default_factory=TextConfig)

    def validate(self) -> None:
        if self.seed < 0:
            raise _fail("seed", f"is {self.seed}; expected a non-negative integer")
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if dataclasses.is_dataclass(section):
                section.validate()

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def flat(self) -> dict[str, str]:
        """``{"score.region": "4", ...}``: every leaf as a string, for run trackers. Characters that MLflow refuses
        in a name (a pattern's ``*``, ``?``, ``[``) become ``_``: ``explain.samples.cascade:_``."""
        out: dict[str, str] = {}

        def walk(d: dict[str, Any], prefix: str) -> None:
            for k, v in d.items():
                if isinstance(v, dict) and v:
                    walk(v, f"{prefix}{k}.")
                else:
                    out[re.sub(r"[^\w\-. :/]", "_", f"{prefix}{k}")] = str(v)[:500]

        walk(self.to_dict(), "")
        return out

    def section_json(self, *names: str) -> str:
        """Canonical JSON of some sections or keys (``"explain.method_params"``), for cache keys and archive
        attrs; reads only those (a stage's DVC params are what it reads, tests/flows/test_dvc_deps.py)."""
        out = {}
        for name in names:
            value: Any = self
            for part in name.split("."):
                value = getattr(value, part)
            out[name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return json.dumps(json.loads(json.dumps(out)), sort_keys=True)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _fail(key, f"is {value!r}; expected a list")
        (item_tp, _) = typing.get_args(tp)
        return tuple(_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(key, f"is {value!r}; expected a mapping")
        (_, value_tp) = typing.get_args(tp)
        if value_tp in (int, float, str, bool):
            return {k: _coerce(f"{key}.{k}", v, value_tp) for k, v in value.items()}
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(key, f"is {value!r}; expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(key, f"is {value!r}; expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(key, f"is {value!r}; expected a number")
        if not math.isfinite(value):
            raise _fail(key, f"is {value!r}; expected a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(key, f"is {value!r}; expected a string")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def _build(cls: type, raw: Any, prefix: str = "") -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _fail(prefix or "the document", f"must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise _fail(where, f"is not a known key (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(f"{prefix}.{k}" if prefix else k, v, hints[k]) for k, v in raw.items()}
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a parsed params.yaml."""
    cfg = _build(Config, raw)
    cfg.validate()
    return cfg


def load_config(path: str | Path = "params.yaml") -> Config:
    """Read and validate params.yaml; raises :class:`XaiCoreError` naming the bad key."""
    path = Path(path)
    if not path.is_file():
        raise XaiCoreError(f"params file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:  # its str() is several lines with a drawing of the spot: keep mark and problem
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise XaiCoreError(f"{path} is not valid YAML{where}: {problem}") from None
    try:
        return config_from_dict(raw or {})
    except XaiCoreError as e:  # name the file that was read, not the default's name
        msg = str(e)
        if path.name != "params.yaml" and msg.startswith("params.yaml: "):
            raise XaiCoreError(f"{path}: {msg.removeprefix('params.yaml: ')}") from None
        raise
