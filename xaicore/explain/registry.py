"""The registry of explainers and the public shell that validates input and guards the model.

An explainer is a private kernel ``fn(model, x, target, *, <hyper-parameters with defaults>) -> Tensor |
Explanation`` plus what it is: its family in the survey's taxonomy (§3.1) and the paper/equation it implements.
Its defaults are read from the kernel's keyword-only parameters, never declared twice. A method fitted on data
declares ``fit(model, x_train, **params) -> state`` (a state class with ``save``/``load``). Training data reach
every method one way, as ``reference=``: the fitted state of a fitted method, a table's training
:class:`~xaicore.features.ColumnStats`, or the training images whose mean the ``mean`` fill takes. The shell
(:func:`explain`, :func:`explanation`) checks shapes and names, runs the model in eval mode and restores it
afterwards.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch
import torch.nn as nn

from xaicore.engine import batch_slices, eval_mode
from xaicore.errors import NotApplicable, XaiCoreError
from xaicore.explain.state import FittedState
from xaicore.kinds import PAD, check_inputs, describe_kind, input_kind  # noqa: F401  (check_inputs re-exported)

KINDS = ("image", "tabular", "text")

Kernel = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class Explanation:
    """A heatmap and what else a method found: ``relevance`` (x's shape) and ``extras``, a dict of (B,) tensors
    (LIME's surrogate R², ...), stored in the archive as (model, explainer, sample) variables, or of B strings
    (anchors' rules)."""

    relevance: torch.Tensor
    extras: Mapping[str, torch.Tensor | tuple[str, ...]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Explainer:
    name: str
    fn: Kernel
    family: str  # function | signal | attribution | baseline | perturbation
    #: the paper and equation the kernel implements
    paper: str
    #: keyword defaults, read from the kernel's signature
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    #: True when the method claims relevance conservation (ΣR ≈ f(x)); the axiom figures are stored for all.
    conservative: bool = False
    #: ``fit(model, x_train, **params) -> state`` for methods fitted on data, else None
    fit: Callable[..., Any] | None = None
    #: the class of the fitted state (``save(path)``, ``load(path)``), for the pipeline to store it
    state_type: type | None = None
    #: names of the per-sample numeric extras the method returns beside the heatmap
    extras: tuple[str, ...] = ()
    #: for a state fitted on the data alone (the model unused): the pipeline artifact holding it, fitted once for
    #: every model by its own stage (``"autoencoder"``: CEM's); None for states fitted per model
    shared_state: str | None = None
    #: False when ``fit`` ignores the model (PDA's patch Gaussians, CEM's autoencoder): one state serves every
    #: model, and the pipeline fits it once
    fit_uses_model: bool = True
    #: the input kinds (``image``, ``tabular``, ``text``) the kernel explains on the raw input
    kinds: tuple[str, ...] = ("image", "tabular")
    #: names of the per-sample string extras (anchors' ``rule``): B strings, kept by the features archives
    text_extras: tuple[str, ...] = ()
    #: True for methods of any differentiable network: on a model with an embedding (:func:`has_embedding`,
    #: tabular and text models) they explain the head at the embedding's output, pooled per column/token
    at_embedding: bool = False

    @property
    def fit_defaults(self) -> Mapping[str, Any]:
        return keyword_defaults(self.fit, skip=2) if self.fit is not None else MappingProxyType({})


_REGISTRY: dict[str, Explainer] = {}


def keyword_defaults(fn: Callable[..., Any], *, skip: int = 3) -> Mapping[str, Any]:
    """The keyword parameters of ``fn`` after its first ``skip`` positional ones, with their defaults (``state``
    excepted); a hyper-parameter without a default is a definition error."""
    out = {}
    for i, p in enumerate(inspect.signature(fn).parameters.values()):
        if i < skip or p.kind is p.VAR_KEYWORD:
            continue
        if p.default is p.empty:
            raise TypeError(f"{fn.__qualname__}: hyper-parameter {p.name!r} needs a default")
        out[p.name] = p.default
    return MappingProxyType(out)


def register(name: str, *, family: str, paper: str, conservative: bool = False,
             fit: Callable[..., Any] | None = None, state_type: type | None = None,
             extras: tuple[str, ...] = (), shared_state: str | None = None, fit_uses_model: bool = True,
             kinds: tuple[str, ...] = ("image", "tabular"), at_embedding: bool = False,
             text_extras: tuple[str, ...] = ()) -> Callable[[Kernel], Kernel]:
    """Decorator: register the kernel under ``name``; its keyword-only parameters are the hyper-parameters."""

    def deco(fn: Kernel) -> Kernel:
        if name in _REGISTRY:
            raise ValueError(f"explainer {name!r} registered twice")
        if (fit is None) != (state_type is None):
            raise ValueError(f"explainer {name!r}: fit and state_type go together")
        if shared_state is not None and fit is None:
            raise ValueError(f"explainer {name!r}: a shared state needs a fit")
        if set(kinds) - set(KINDS):
            raise ValueError(f"explainer {name!r}: kinds {kinds} must be among {KINDS}")
        _REGISTRY[name] = Explainer(name, fn, family, paper, keyword_defaults(fn), conservative, fit,
                                    state_type, tuple(extras), shared_state, fit_uses_model, tuple(kinds),
                                    tuple(text_extras), at_embedding)
        return fn

    return deco


def methods() -> list[str]:
    """Every registered method name, sorted."""
    return sorted(_REGISTRY)


def get_explainer(name: str) -> Explainer:
    if name not in _REGISTRY:
        raise XaiCoreError(f"unknown method {name!r}; registered methods: {', '.join(methods())}")
    return _REGISTRY[name]


def _check_params(ex: Explainer, params: Mapping[str, Any], allowed: Mapping[str, Any], verb: str) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise XaiCoreError(f"{verb} of method {ex.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                           f"its parameters: {', '.join(allowed) or 'none'}")


def explanation(model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str = "gradient",
                **params: Any) -> Explanation:
    """:func:`explain`'s heatmap as ``.relevance`` plus the method's per-sample ``.extras`` (LIME's surrogate
    R², ...); same arguments."""
    ex = get_explainer(method)
    _check_params(ex, params, ex.defaults, "explain")
    target = check_inputs(x, target)
    kw = {**ex.defaults, **params}
    fitted = params.get("reference")
    if ex.fit is None and isinstance(fitted, FittedState):
        raise XaiCoreError(f"method {method!r} is not fitted on data: it takes no fitted state "
                           f"({type(fitted).__name__}) as reference")
    if ex.fit is not None and isinstance(fitted, FittedState) and not isinstance(fitted, ex.state_type):
        raise XaiCoreError(f"method {method!r} takes reference={ex.state_type.__name__} "  # type: ignore[union-attr]
                           f"(from xaicore.fit(model, x_train, method={method!r})), got {type(fitted).__name__}")
    route = _route(ex, model, x)
    with eval_mode(model), torch.enable_grad():
        if route == "embedding":
            with torch.no_grad():
                e = model.embed(x.detach())
            out = ex.fn(model.head, e, target, **kw)
            out = out if isinstance(out, Explanation) else Explanation(out)
            if out.relevance.shape != e.shape:
                raise XaiCoreError(f"method {method!r} returned shape {tuple(out.relevance.shape)} for the "
                                   f"embedding {tuple(e.shape)}")
            out = Explanation(model.embed.pool(out.relevance.detach()), out.extras)
        else:
            out = ex.fn(model, x.detach(), target, **kw)
    if not isinstance(out, Explanation):
        out = Explanation(out)
    rel = out.relevance
    if rel.shape != x.shape:
        raise XaiCoreError(f"method {method!r} returned shape {tuple(rel.shape)} for x {tuple(x.shape)}")
    rel = rel.detach().to(dtype=x.dtype if x.is_floating_point() else torch.float32, device=x.device)
    if not x.is_floating_point():  # text: padding is no token, it gets no relevance (noise baseline included)
        rel = rel.masked_fill(x == PAD, 0.0)
    if not torch.isfinite(rel).all():
        raise XaiCoreError(f"method {method!r} produced non-finite relevance (NaN or inf) for "
                           f"{int((~torch.isfinite(rel)).flatten(1).any(1).sum())} of {x.shape[0]} samples")
    extras = {k: tuple(map(str, v)) if k in ex.text_extras else torch.as_tensor(v).detach().to(x.device)
              for k, v in out.extras.items()}
    declared = (*ex.extras, *ex.text_extras)
    if set(declared) - set(extras) or any(len(v) != x.shape[0] or (isinstance(v, torch.Tensor) and v.ndim != 1)
                                         for v in extras.values()):
        raise XaiCoreError(f"method {method!r} must return the (B,) extras {', '.join(declared)}")
    return Explanation(rel, MappingProxyType(extras))


def explain_batched(model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str, *, batch_size: int,
                    **params: Any) -> Explanation:
    """:func:`explanation` of ``x`` in the fixed batches of ``batch_size`` samples (:func:`~xaicore.engine.
    batch_slices`), relevance and extras concatenated: how the pipeline's stages explain (batches set by the
    params)."""
    parts = [explanation(model, x[s], target[s], method, **params)
             for s in batch_slices(x.shape[0], batch_size)]
    extras = {k: torch.cat([p.extras[k] for p in parts]) if isinstance(v, torch.Tensor)  # type: ignore[misc]
              else tuple(w for p in parts for w in p.extras[k]) for k, v in parts[0].extras.items()}
    return Explanation(torch.cat([p.relevance for p in parts]), MappingProxyType(extras))


def has_embedding(model: nn.Module) -> bool:
    """Whether ``model`` is a tabular/text model of :mod:`xaicore.models.embedding`: children ``embed`` (with
    ``pool``, relevance at its output → per column/token) and ``head``, forward = head(embed(x))."""
    embed = getattr(model, "embed", None)
    return isinstance(embed, nn.Module) and callable(getattr(embed, "pool", None)) and \
        isinstance(getattr(model, "head", None), nn.Module)


def _route(ex: Explainer, model: nn.Module, x: torch.Tensor) -> str:
    """``embedding`` (explain the head at the embedding's output), ``input`` (the kernel takes x), or
    :class:`NotApplicable` naming the input kind."""
    kind = input_kind(x)
    embedded = kind in ("tabular", "text") and has_embedding(model)
    if embedded and ex.at_embedding:
        return "embedding"
    if kind in ex.kinds and (not embedded or ex.family in ("perturbation", "baseline")):
        return "input"
    if kind == "text" and ex.at_embedding:
        raise NotApplicable(f"method {ex.name!r} explains text at the embedding: the model needs children "
                            "'embed' (with pool) and 'head' (xaicore.models.embedding), got "
                            f"{type(model).__name__}")
    can = sorted(set(ex.kinds) | ({"tabular", "text"} if ex.at_embedding else set()))
    where = " on models without an embedding" if embedded and kind in ex.kinds else ""
    raise NotApplicable(f"method {ex.name!r} explains {' and '.join(can)} inputs{where}; it cannot explain "
                        f"{describe_kind(x)}")


def explain(model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str = "gradient",
            **params: Any) -> torch.Tensor:
    """Heatmap of ``model``'s ``target`` logit for each input of the batch ``x`` with ``method``.

    Returns relevance of ``x``'s shape, dtype and device, detached. The model is run in eval mode and left as
    it was (training flag, parameters, no hooks). Training data reach a method as ``reference=``:
    ``xaicore.fit(...)``'s state for the fitted methods, the training ColumnStats of table rows, training images
    for the ``mean`` fill.
    Unknown methods or keywords, bad shapes and non-finite relevance raise :class:`~xaicore.errors.XaiCoreError`.
    """
    return explanation(model, x, target, method, **params).relevance


def fit(model: nn.Module, x_train: torch.Tensor, method: str, **params: Any) -> Any:
    """Fit what ``method`` needs from data (PatternNet's signal estimators, PDA's patch Gaussians) on
    ``x_train``; pass the returned state to :func:`explain` as ``reference=``. The model is left as it was."""
    ex = get_explainer(method)
    if ex.fit is None:
        raise XaiCoreError(f"method {method!r} is not fitted on data; fittable methods: "
                           f"{', '.join(n for n in methods() if _REGISTRY[n].fit is not None)}")
    _check_params(ex, params, ex.fit_defaults, "fit")
    check_inputs(x_train)
    with eval_mode(model):
        return ex.fit(model, x_train.detach(), **{**ex.fit_defaults, **params})


def call_keywords(method: str, params: Mapping[str, Any], *, state: Any = None, reference: Any = None,
                  vocab: Any = None, seed: int | None = None) -> dict[str, Any]:
    """The keywords of one call of ``method``, assembled in one place for every stage: ``params`` (params.yaml's),
    then what a run supplies, each only where the method takes it — the training data as ``reference``: the
    fitted ``state`` for methods with a fit, else ``reference`` (the ``mean`` fill's mean image, a table's
    :class:`ColumnStats`); the ``vocab`` anchors words its rules with; the run's ``seed``. They do not override
    what ``params`` set."""
    ex = get_explainer(method)
    kw = dict(params)
    if ex.fit is not None and (state is not None or isinstance(reference, torch.Tensor)):
        reference = state  # a fitted method takes its state (or a table's ColumnStats), never raw images
    for name, value in (("reference", reference), ("vocab", vocab), ("seed", seed)):
        if value is not None and name in ex.defaults:
            kw.setdefault(name, value)
    return kw


def fit_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Those of a method's explain ``params`` that its ``fit`` also takes (e.g. PDA's window and padding)."""
    ex = get_explainer(method)
    return {k: v for k, v in params.items() if k in ex.fit_defaults}
