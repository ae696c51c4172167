"""Testing with Concept Activation Vectors, TCAV (Kim et al. 2018, "Interpretability beyond feature attribution:
quantitative testing with concept activation vectors (TCAV)", ICML; survey §7.2): does class k's prediction rise
along the direction of a human concept (stripes, a watermark) in a hidden layer, tested against random concepts.

Definitions (§2.2–2.5 of the paper; numbers of Kim et al. where they give one):

* activations f_l(x): layer l's output (the named module's, as ``model.named_modules()`` names it), flattened
  to a vector of D = C·H·W numbers per input.
* CAV v_C^l: the unit normal of a linear classifier separating f_l of the concept's examples (label 1) from f_l
  of a random set's examples (label 0), pointing toward the concept. ``classifier="sgd"``: scikit-learn's
  ``SGDClassifier(loss="hinge", alpha=0.01, max_iter=1000, tol=1e-3)`` (the linear SVM of Kim et al.'s code and
  Captum's default); ``"logistic"``: ``LogisticRegression(C=1, max_iter=1000)``. Each is fitted on a stratified
  (1 − ``test_fraction``) split and scored on the rest (``.accuracy``); split and SGD draw from ``seed`` and the
  pair's index, nothing global. v = w/‖w‖. When a layer has more features D than twice a set's examples (a
  conv layer), each classifier is fitted on the coordinates of its training examples in an orthonormal basis
  Q = A_trᵀ·U·S^(−1/2) of their span (A_tr·A_trᵀ = U·S·Uᵀ, a slice of one Gram matrix of all the sets per
  layer; eigenvalues below 1e-12 of the largest dropped) and w = Q·w'. Both classifiers' weights start at 0 and
  only ever gain multiples of training examples (SGD's updates; the L2-regularised optimum, by the representer
  theorem), and w·x = w'·Qᵀx, so this is the same classifier — SGD's iterates equal up to rounding, the
  logistic optimum within its solver's tolerance — at n instead of D numbers per example.
* directional derivative S_{C,k,l}(x) = ∇h_{l,k}(f_l(x)) · v_C^l (paper eq. 1), h_{l,k} the logit of class k
  as a function of layer l's output (``.derivative``).
* TCAV score TCAV_{Q,C,k,l} = |{x ∈ X_k : S_{C,k,l}(x) > 0}| / |X_k| (paper eq. 2), X_k the inputs given.
* magnitude: Σ_x max(S(x), 0) / Σ_x |S(x)|, the share of the derivative's mass that is positive (1: every input
  moves toward class k, 0.5 when it balances). Captum's ``magnitude`` is the plain mean of S: take
  ``.derivative.mean(-1)`` for that.
* significance (§3.2 of the paper, as its code tests it): with R random sets r_1..r_R, the concept's scores are
  s_i = TCAV(CAV(C vs r_i)), i = 1..R, and the random scores t_j = TCAV(CAV(r_1 vs r_j)), j = 2..R (r_1 stands
  in for a concept: "random counterpart"). p is the two-sided t-test of {s_i} against {t_j} (scipy's
  ``ttest_ind``, equal variances); identical constant samples give p = 1. A concept is significant at layer l
  when p < ``alpha`` / m (Bonferroni), m = ``n_tests``, by default concepts × layers. ``.score`` is the mean of
  s_i. At least 2 random sets are needed; fewer than 10 warn.

Cost: every concept and random set goes through the model once for all layers (activations cached per set and
layer; one Gram matrix of them per layer), and the class inputs once forward and backward for all layers:
(concepts + R)·⌈N/``forward_batch``⌉ forward passes plus ⌈|X_k|/``forward_batch``⌉ forward and backward passes,
whatever the number of CAVs. The model runs in eval mode, its parameters, ``.grad`` and flags are left as they were.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from xaicore.engine import FORWARD_BATCH, batch_slices, check_forward_batch, eval_mode
from xaicore.engine.model import captured_outputs, named_layers
from xaicore.errors import XaiCoreError, require_finite

CLASSIFIERS = ("sgd", "logistic")
#: Examples a concept or random set needs: 2 per class in the held-out split at test_fraction 1/3.
MIN_EXAMPLES = 6
#: Random sets below which the t-test is allowed but warned about (Kim et al. use 10 to 500).
ADVISED_RANDOMS = 10


@dataclasses.dataclass(frozen=True)
class TCAVResult:
    """Per concept (``concepts``) and layer (``layers``):

    ``score`` (concepts, layers): mean TCAV score over the random sets; ``scores`` (concepts, layers, R) per
    random set; ``random_scores`` (layers, R − 1); ``magnitude`` (concepts, layers) mean magnitude;
    ``pvalue`` / ``significant`` (concepts, layers) at ``alpha`` / ``n_tests``; ``accuracy`` (concepts, layers,
    R) of the CAV classifiers on their held-out split; ``derivative`` (concepts, layers, R, N) the directional
    derivatives S; ``cavs`` maps each layer to its (concepts, R, D) unit CAVs; ``forward_passes`` the model
    calls made.
    """

    concepts: tuple[str, ...]
    layers: tuple[str, ...]
    score: np.ndarray
    scores: np.ndarray
    random_scores: np.ndarray
    magnitude: np.ndarray
    pvalue: np.ndarray
    significant: np.ndarray
    accuracy: np.ndarray
    derivative: np.ndarray
    cavs: dict[str, np.ndarray]
    alpha: float
    n_tests: int
    forward_passes: int


# --- activations and gradients -----------------------------------------------------------------------------

@torch.no_grad()
def layer_activations(model: nn.Module, x: torch.Tensor, layers: Sequence[str], *,
                      forward_batch: int = FORWARD_BATCH) -> dict[str, torch.Tensor]:
    """f_l(x) flattened to (N, D_l) for every layer in ``layers``, one forward pass per ``forward_batch``
    inputs for all layers together (eval mode; the model is left as it was)."""
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    with eval_mode(model):
        for s in batch_slices(len(x), forward_batch):
            with captured_outputs(model, layers) as out:
                model(x[s])
            for name in layers:
                parts[name].append(out[name].detach().flatten(1))
    return {name: torch.cat(p) for name, p in parts.items()}


def layer_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layers: Sequence[str], *,
                    forward_batch: int = FORWARD_BATCH) -> dict[str, torch.Tensor]:
    """∇h_{l,k}(f_l(x)): the gradient of each input's target logit with respect to layer l's output, flattened
    to (N, D_l), for every layer from one forward and backward pass per ``forward_batch`` inputs."""
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    with eval_mode(model), torch.enable_grad():
        for s in batch_slices(len(x), forward_batch):
            xb = x[s].detach().clone().requires_grad_(True)
            with captured_outputs(model, layers) as out:
                logits = model(xb)
            if logits.ndim != 2:
                raise XaiCoreError(f"the model returns a {logits.ndim}-d output; TCAV needs (B, classes) logits")
            picked = logits.gather(1, target[s, None].to(logits.device)).sum()
            grads = torch.autograd.grad(picked, [out[name] for name in layers], allow_unused=True)
            for name, g in zip(layers, grads, strict=True):
                if g is None:
                    raise XaiCoreError(f"the logits do not depend on layer {name!r}'s output")
                parts[name].append(g.detach().flatten(1))
    return {name: torch.cat(p) for name, p in parts.items()}


# --- CAVs ----------------------------------------------------------------------------------------------------

class _LayerActivations:
    """The activations of every concept and random set at one layer, stacked (float64), with the Gram matrix of
    all of them when a CAV would have more features than examples (see :func:`concept_activation_vector`)."""

    def __init__(self, sets: list[np.ndarray]) -> None:
        self.rows = np.concatenate([np.asarray(a, dtype=np.float64) for a in sets])
        bounds = np.cumsum([0, *(len(a) for a in sets)])
        self.index = [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        pair = 2 * max(len(a) for a in sets)
        self.gram = self.rows @ self.rows.T if self.rows.shape[1] > pair else None

    def cav(self, concept: int, random: int, *, classifier: str, test_fraction: float,
            seed: int) -> tuple[np.ndarray, float]:
        rows = np.concatenate([self.index[concept], self.index[random]])
        labels = np.concatenate([np.ones(len(self.index[concept]), np.int64),
                                 np.zeros(len(self.index[random]), np.int64)])
        from sklearn.model_selection import train_test_split

        tr, te = train_test_split(np.arange(len(rows)), test_size=test_fraction, random_state=seed, stratify=labels)
        if self.gram is None:
            x_tr, x_te, back = self.rows[rows[tr]], self.rows[rows[te]], None
        else:  # coordinates in an orthonormal basis Q = A_trᵀ·P of the training examples' span
            g = self.gram[np.ix_(rows[tr], rows[tr])]
            s, u = np.linalg.eigh(g)
            keep = s > s[-1] * 1e-12
            proj = u[:, keep] / np.sqrt(s[keep])
            x_tr, x_te, back = g @ proj, self.gram[np.ix_(rows[te], rows[tr])] @ proj, proj
        w, accuracy = _fit_linear(x_tr, labels[tr], x_te, labels[te], classifier, seed)
        if back is not None:
            w = self.rows[rows[tr]].T @ (back @ w)
        norm = float(np.linalg.norm(w))
        if not norm > 0:
            raise XaiCoreError("the CAV classifier learned a zero normal: concept and random activations are not "
                               "separable at all at this layer")
        return w / norm, accuracy


def _fit_linear(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, classifier: str,
                seed: int) -> tuple[np.ndarray, float]:
    """The classifier's weights (toward label 1) and its accuracy on the held-out rows."""
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    if classifier == "sgd":
        lm = SGDClassifier(loss="hinge", alpha=0.01, max_iter=1000, tol=1e-3, random_state=seed)
    else:
        lm = LogisticRegression(C=1.0, max_iter=1000)
    lm.fit(x_tr, y_tr)
    w = lm.coef_[0] if lm.classes_[1] == 1 else -lm.coef_[0]
    return w, float(lm.score(x_te, y_te))


def concept_activation_vector(concept: np.ndarray, random: np.ndarray, *, classifier: str = "sgd",
                              test_fraction: float = 0.33, seed: int = 0) -> tuple[np.ndarray, float]:
    """(v, accuracy): the unit normal of the linear classifier separating ``concept`` (N_c, D) activations
    (label 1) from ``random`` (N_r, D) ones (label 0), pointing toward the concept, and its held-out accuracy."""
    return _LayerActivations([concept, random]).cav(0, 1, classifier=classifier, test_fraction=test_fraction,
                                                   seed=seed)


def tcav_score(derivative: torch.Tensor | np.ndarray) -> np.ndarray:
    """Paper eq. 2 over the last axis: the fraction of directional derivatives that are > 0."""
    return (np.asarray(derivative) > 0).mean(-1)


def magnitude_score(derivative: torch.Tensor | np.ndarray) -> np.ndarray:
    """Σ max(S, 0) / Σ |S| over the last axis (0.5 where every S is 0)."""
    s = np.asarray(derivative, dtype=np.float64)
    total = np.abs(s).sum(-1)
    return np.where(total > 0, np.clip(s, 0, None).sum(-1) / np.where(total > 0, total, 1.0), 0.5)


def significance(scores: np.ndarray, random_scores: np.ndarray) -> float:
    """Two-sided equal-variance t-test of a concept's scores against random-vs-random scores (p = 1 when both
    are the same constant)."""
    from scipy.stats import ttest_ind

    a, b = np.asarray(scores, np.float64), np.asarray(random_scores, np.float64)
    if np.ptp(np.concatenate([a, b])) == 0:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_ind(a, b).pvalue)
    return 0.0 if math.isnan(p) else p  # both constant, different means: the difference is certain


# --- validation ----------------------------------------------------------------------------------------------

def _as_sets(concept: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(concept, torch.Tensor):
        return {"concept": concept}
    if isinstance(concept, Mapping) and concept:
        return dict(concept)
    raise XaiCoreError("concept must be a tensor of examples or a non-empty {name: tensor} mapping")


def _check(model: nn.Module, x: torch.Tensor, target: torch.Tensor, concepts: dict[str, torch.Tensor],
           randoms: Sequence[torch.Tensor], layers: list[str], classifier: str, test_fraction: float,
           alpha: float) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or len(x) == 0:
        raise XaiCoreError("x must be a non-empty (N, ...) tensor of the class's inputs")
    require_finite(x, "x")
    if target.shape != (len(x),):
        raise XaiCoreError(f"target must be a class index or an (N,) tensor, got shape {tuple(target.shape)}")
    if classifier not in CLASSIFIERS:
        raise XaiCoreError(f"unknown CAV classifier {classifier!r}; expected one of {', '.join(CLASSIFIERS)}")
    if not 0 < test_fraction < 1:
        raise XaiCoreError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not 0 < alpha < 1:
        raise XaiCoreError(f"alpha must be in (0, 1), got {alpha}")
    if isinstance(randoms, torch.Tensor) or len(randoms) < 2:
        n = "a single tensor" if isinstance(randoms, torch.Tensor) else f"{len(randoms)}"
        raise XaiCoreError(f"the significance test needs at least 2 random sets (Kim et al. use 10 or more), "
                           f"got {n}; pass a list of tensors")
    if len(randoms) < ADVISED_RANDOMS:
        warnings.warn(f"TCAV with {len(randoms)} random sets: the t-test has little power under "
                      f"{ADVISED_RANDOMS}", stacklevel=3)
    sets = {**{f"concept {k!r}": v for k, v in concepts.items()},
            **{f"random set {i}": r for i, r in enumerate(randoms)}}
    for what, v in sets.items():
        if not isinstance(v, torch.Tensor) or v.shape[1:] != x.shape[1:]:
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise XaiCoreError(f"{what}: examples of shape {shape} do not match the inputs' (N, "
                               f"{', '.join(map(str, x.shape[1:]))})")
        if len(v) < MIN_EXAMPLES:
            raise XaiCoreError(f"{what} has {len(v)} examples; the CAV classifier needs at least {MIN_EXAMPLES} "
                               "(2 per class held out)")
        require_finite(v, what)
    if not layers:
        raise XaiCoreError("name at least one layer")
    named_layers(model, layers)


# --- the verb ------------------------------------------------------------------------------------------------

def tcav(model: nn.Module, x: torch.Tensor, target: int | torch.Tensor,
         concept: torch.Tensor | Mapping[str, torch.Tensor], randoms: Sequence[torch.Tensor], *,
         layer: str | Sequence[str], classifier: str = "sgd", test_fraction: float = 0.33, alpha: float = 0.05,
         n_tests: int | None = None, seed: int = 0, forward_batch: int = FORWARD_BATCH) -> TCAVResult:
    """TCAV of ``concept`` (examples (N_c, ...) or ``{name: examples}``) for the class inputs ``x`` and their
    ``target`` class, at ``layer`` (a name or several), tested against ``randoms`` (≥ 2 random example sets);
    see the module docstring. A single concept and layer give (1, 1) arrays."""
    concepts = _as_sets(concept)
    layers = [layer] if isinstance(layer, str) else list(layer)
    target_t = torch.as_tensor(target, dtype=torch.long)
    if target_t.ndim == 0 and isinstance(x, torch.Tensor):
        target_t = target_t.expand(len(x))
    _check(model, x, target_t, concepts, randoms, layers, classifier, test_fraction, alpha)
    forward_batch = check_forward_batch(forward_batch, "tcav")
    n_tests = len(concepts) * len(layers) if n_tests is None else int(n_tests)
    if n_tests < 1:
        raise XaiCoreError(f"n_tests (the Bonferroni count) must be ≥ 1, got {n_tests}")

    passes = sum(math.ceil(len(v) / forward_batch) for v in (*concepts.values(), *randoms))
    passes += math.ceil(len(x) / forward_batch)
    acts = {name: layer_activations(model, v, layers, forward_batch=forward_batch) for name, v in concepts.items()}
    rand_acts = [layer_activations(model, r, layers, forward_batch=forward_batch) for r in randoms]
    grads = layer_gradients(model, x, target_t, layers, forward_batch=forward_batch)

    n_c, n_l, n_r = len(concepts), len(layers), len(randoms)
    scores = np.zeros((n_c, n_l, n_r))
    accuracy = np.zeros((n_c, n_l, n_r))
    derivative = np.zeros((n_c, n_l, n_r, len(x)))
    random_scores = np.zeros((n_l, n_r - 1))
    cavs: dict[str, np.ndarray] = {}
    for j, name in enumerate(layers):
        grad = grads[name]
        sets = _LayerActivations([*(acts[c][name].numpy() for c in concepts), *(r[name].numpy() for r in rand_acts)])
        kw = dict(classifier=classifier, test_fraction=test_fraction)
        layer_cavs = np.zeros((n_c, n_r, grad.shape[1]))
        for i in range(n_c):
            for r in range(n_r):
                layer_cavs[i, r], accuracy[i, j, r] = sets.cav(i, n_c + r, seed=seed * 1_000_003 + r, **kw)
        s = torch.matmul(grad.float(), torch.from_numpy(layer_cavs.reshape(-1, grad.shape[1])).float().T)
        derivative[:, j] = s.T.reshape(n_c, n_r, -1).double().numpy()
        scores[:, j] = tcav_score(derivative[:, j])
        rand_cavs = np.stack([sets.cav(n_c, n_c + r, seed=seed * 1_000_003 + n_r + r, **kw)[0]
                              for r in range(1, n_r)])
        random_scores[j] = tcav_score((grad.float() @ torch.from_numpy(rand_cavs).float().T).T.numpy())
        cavs[name] = layer_cavs
    pvalue = np.array([[significance(scores[i, j], random_scores[j]) for j in range(n_l)] for i in range(n_c)])
    return TCAVResult(concepts=tuple(concepts), layers=tuple(layers), score=scores.mean(-1), scores=scores,
                      random_scores=random_scores, magnitude=magnitude_score(derivative).mean(-1), pvalue=pvalue,
                      significant=pvalue < alpha / n_tests, accuracy=accuracy, derivative=derivative, cavs=cavs,
                      alpha=alpha, n_tests=n_tests, forward_passes=passes)
