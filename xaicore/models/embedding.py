"""Models for tabular and text data: ``EmbeddingModel`` = ``head(embed(x))``.

Gradients of token ids or nominal codes mean nothing, so gradient methods explain at ``model.embed``'s output
and hand the relevance back per input feature with ``model.embed.pool(r) -> (B, F)``:

* ``ColumnEncoder`` (tabular): a numeric column standardized with the training mean and std, a nominal column
  one-hot encoded; ``pool`` sums the encoded dims of each column.
* ``TokenEmbedding`` (text): a learnt vector per token (PAD's is zero); ``pool`` sums over the embedding dim.

Heads (``nn.ReLU`` modules only, never functional ReLU): tabular ``mlp`` (fc1-relu1-fc2-relu2-fc3, 64 and 32
hidden units); text ``bag`` (sum of the token vectors, fc1-relu1-fc2), ``conv`` (a Conv1d over time, k = 3, ReLU,
max over time, fc; Kim 2014) and ``gru`` (a GRU, Cho et al. 2014, whose outputs are averaged over every
position, pads included: the head sees only the embeddings, where a pad is a zero vector like any other input;
then fc). :func:`titanic_logistic` is the Titanic set's generating model as such a network.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from xaicore._weights import load_tensors, save_tensors
from xaicore.atomic import write_text
from xaicore.data.core import PAD, UNK, Dataset
from xaicore.engine import batch_slices
from xaicore.errors import XaiCoreError

FEATURE_ARCHS: dict[str, tuple[str, ...]] = {"tabular": ("mlp",), "text": ("bag", "conv", "gru")}


class ColumnEncoder(nn.Module):
    """(B, F) float columns → (B, E): numeric ``(x_j − mean_j) / std_j``, nominal one-hot of the code.
    ``groups`` (E,) is the column of each encoded dim."""

    def __init__(self, categories: Sequence[Sequence[str]], mean: Sequence[float] | torch.Tensor,
                 std: Sequence[float] | torch.Tensor) -> None:
        super().__init__()
        self.categories = tuple(tuple(c) for c in categories)
        n = len(self.categories)
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != (n,) or std.shape != (n,):
            raise XaiCoreError(f"ColumnEncoder: mean {tuple(mean.shape)} and std {tuple(std.shape)} must be ({n},)")
        groups = [j for j, c in enumerate(self.categories) for _ in range(max(1, len(c)))]
        levels = [float(k) if c else -1.0 for c in self.categories for k in range(max(1, len(c)))]
        self.register_buffer("mean", mean)
        self.register_buffer("std", torch.where(std == 0, torch.ones_like(std), std))
        self.register_buffer("groups", torch.tensor(groups, dtype=torch.long))
        self.register_buffer("levels", torch.tensor(levels))  # the code a one-hot dim stands for; -1: numeric
        self.nominal = tuple(j for j, c in enumerate(self.categories) if c)

    @property
    def n_features(self) -> int:
        return len(self.categories)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise XaiCoreError(f"ColumnEncoder expects (B, {self.n_features}) columns, got {tuple(x.shape)}")
        for j in self.nominal:
            col, k = x[:, j], len(self.categories[j])
            bad = (col != col.round()) | (col < 0) | (col >= k)
            if bool(bad.any()):
                code = float(col[bad][0])
                raise XaiCoreError(f"column {j}: code {code:g} is not one of the {k} training categories")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        cols = x[:, self.groups]
        numeric = (cols - self.mean[self.groups]) / self.std[self.groups]
        return torch.where(self.levels >= 0, (cols == self.levels).to(numeric.dtype), numeric)

    def pool(self, r: torch.Tensor) -> torch.Tensor:
        """(B, E) relevance of the encoded dims → (B, F): the sum over each column's dims."""
        out = r.new_zeros(r.shape[0], self.n_features)
        return out.index_add(1, self.groups, r)


class TokenEmbedding(nn.Module):
    """(B, T) token ids → (B, T, D) vectors; PAD's vector is zero, an id outside the vocab reads as UNK."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        if vocab_size < 2 or dim < 1:
            raise XaiCoreError(f"TokenEmbedding needs a vocab of >= 2 (pad, unk) and dim >= 1, got {vocab_size}, "
                               f"{dim}")
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2:
            raise XaiCoreError(f"TokenEmbedding expects (B, T) token ids, got {tuple(x.shape)}")
        ids = x.long()
        ids = torch.where((ids < 0) | (ids >= self.embedding.num_embeddings), torch.full_like(ids, UNK), ids)
        return self.embedding(ids)

    def pool(self, r: torch.Tensor) -> torch.Tensor:
        """(B, T, D) relevance of the token vectors → (B, T): the sum over the embedding dim."""
        return r.sum(-1)


class SumTokens(nn.Module):
    """(B, T, D) → (B, D): the bag of words' sum over positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(1)


class TimeChannels(nn.Module):
    """(B, T, D) → (B, D, T), the layout ``nn.Conv1d`` convolves over time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class MeanGRU(nn.Module):
    """A one-layer GRU over (B, T, D); its outputs (B, T, H) averaged over the positions → (B, H)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(dim, hidden, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0].mean(1)


class EmbeddingModel(nn.Module):
    """``head(embed(x))``; ``config`` is what :func:`save_embedding_model` writes to rebuild it."""

    def __init__(self, embed: nn.Module, head: nn.Module, config: dict[str, Any]) -> None:
        super().__init__()
        self.embed = embed
        self.head = head
        self.config = dict(config)

    @property
    def arch(self) -> str:
        return str(self.config["arch"])

    @property
    def kind(self) -> str:
        return str(self.config["kind"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def _seq(*layers: tuple[str, nn.Module]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


def _head(arch: str, width: int, n_classes: int) -> nn.Module:
    """The head of ``arch`` on ``width`` encoded dims (tabular) or an embedding of ``width`` (text)."""
    if arch == "mlp":
        return _seq(("fc1", nn.Linear(width, 64)), ("relu1", nn.ReLU()), ("fc2", nn.Linear(64, 32)),
                    ("relu2", nn.ReLU()), ("fc3", nn.Linear(32, n_classes)))
    if arch == "bag":
        return _seq(("sum", SumTokens()), ("fc1", nn.Linear(width, 32)), ("relu1", nn.ReLU()),
                    ("fc2", nn.Linear(32, n_classes)))
    if arch == "conv":
        return _seq(("channels", TimeChannels()), ("conv1", nn.Conv1d(width, 32, 3, padding=1)), ("relu1", nn.ReLU()),
                    ("maxpool", nn.AdaptiveMaxPool1d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(32, n_classes)))
    return _seq(("gru", MeanGRU(width, 32)), ("fc", nn.Linear(32, n_classes)))


def _build(config: dict[str, Any], mean: Any = None, std: Any = None) -> EmbeddingModel:
    arch, kind = config["arch"], config["kind"]
    if arch == "titanic_logistic":
        return titanic_logistic()
    if kind not in FEATURE_ARCHS:
        raise XaiCoreError(f"embedding models are for {' and '.join(FEATURE_ARCHS)} data, not {kind!r} (images: "
                           "xaicore.models.build_model)")
    if arch not in FEATURE_ARCHS[kind]:
        raise XaiCoreError(f"unknown {kind} architecture {arch!r}; known: {', '.join(FEATURE_ARCHS[kind])}")
    if kind == "tabular":
        n = len(config["categories"])
        embed: nn.Module = ColumnEncoder(config["categories"], np.zeros(n) if mean is None else mean,
                                         np.ones(n) if std is None else std)
        width = int(embed.groups.shape[0])
    else:
        embed, width = TokenEmbedding(int(config["vocab_size"]), int(config["dim"])), int(config["dim"])
    return EmbeddingModel(embed, _head(arch, width, int(config["n_classes"])), config)


def build_embedding_model(arch: str, ds: Dataset, *, dim: int = 16) -> EmbeddingModel:
    """A fresh, untrained model for ``ds``'s kind (init follows the global torch seed). Tabular: numeric columns
    standardized with ``ds.x_train``'s mean and std (a constant column's std taken as 1). Text: ``dim``-wide
    token vectors (tabular ignores ``dim``)."""
    config: dict[str, Any] = {"arch": arch, "kind": ds.kind, "n_classes": int(ds.n_classes)}
    if ds.kind == "tabular":
        x = ds.x_train.double()
        config["categories"] = [list(c) for c in ds.categories]
        return _build(config, x.mean(0).float(), x.std(0, unbiased=False).float())
    config.update(vocab_size=len(ds.vocab), dim=int(dim))
    return _build(config)


def train_embedding_model(arch: str, ds: Dataset, *, epochs: int, batch_size: int = 64, lr: float = 1e-2,
                        seed: int = 0, dim: int = 16, word_dropout: float = 0.2,
                        progress: bool = False) -> tuple[EmbeddingModel, float, float]:
    """Adam on cross-entropy; init, shuffles and dropout drawn from ``seed`` only (same seed, same weights on the
    CPU). Text: each token of a training batch becomes UNK with probability ``word_dropout`` (word dropout, Iyyer
    et al. 2015), so the unknown word — what word erasure, LIME and anchors put in a removed token's place —
    is a word the model has seen, not a random vector. Returns (model in eval mode, training accuracy, test
    accuracy)."""
    from tqdm.auto import tqdm

    from xaicore.models.train import accuracy

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_embedding_model(arch, ds, dim=dim)
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = ds.x_train, ds.y_train
    model.train()
    for _ in tqdm(range(epochs), desc=f"train {arch}", disable=not progress, leave=False):
        perm = torch.randperm(x.shape[0], generator=gen)
        for s in batch_slices(x.shape[0], batch_size):
            idx = perm[s]
            xb = x[idx]
            if ds.kind == "text" and word_dropout > 0:
                drop = (torch.rand(xb.shape, generator=gen) < word_dropout) & (xb != PAD)
                xb = torch.where(drop, torch.full_like(xb, UNK), xb)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), y[idx]).backward()
            opt.step()
    model.eval()
    return model, accuracy(model, x, y), accuracy(model, ds.x_test, ds.y_test)


def save_embedding_model(model: EmbeddingModel, path: str | Path, *, arch: str | None = None, **info: Any) -> None:
    """The ``state_dict`` to ``path`` and what rebuilds it (arch, kind, categories or vocab size and dim,
    n_classes, plus ``info``) to the ``.json`` beside it; both written whole, then renamed."""
    if not isinstance(model, EmbeddingModel):
        raise XaiCoreError(f"save_embedding_model saves a EmbeddingModel, got {type(model).__name__} (images: "
                           "xaicore.models.save_model)")
    if arch is not None and arch != model.arch:
        raise XaiCoreError(f"save_embedding_model: arch {arch!r} given for a {model.arch!r} model")
    path = Path(path)
    write_text(path.with_suffix(".json"), json.dumps({**info, **model.config}, indent=1, sort_keys=True))
    save_tensors(model.state_dict(), path)  # last: the weights file's presence means the model is complete


def load_embedding_model(path: str | Path) -> EmbeddingModel:
    """Rebuild what :func:`save_embedding_model` wrote (``weights_only`` loading); returned in eval mode."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    rerun = "the train stage"
    if not path.is_file() or not meta_path.is_file():
        raise XaiCoreError(f"feature model {path} (or {meta_path.name}) is missing; run {rerun} first")
    try:
        meta = json.loads(meta_path.read_text())
        model = _build(meta)
        model.config = dict(meta)  # with the saved info (dataset, accuracy ...)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise XaiCoreError(f"feature model description {meta_path} is corrupt ({type(e).__name__}: {e}); rerun "
                           f"{rerun}") from None
    state = load_tensors(path, "feature model weights", rerun)
    try:
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - missing or misshapen tensors: a file that does not fit its JSON
        first = str(e).strip().splitlines()[0]
        raise XaiCoreError(f"feature model weights {path} do not fit its {meta['arch']} ({first[:160]}); rerun "
                           f"{rerun}") from None
    return model.eval()


def titanic_logistic() -> EmbeddingModel:
    """The Titanic set's generating model in float64: one-hot codes, then a Linear layer whose logits are
    ``[0, titanic_logodds(codes)]``, so softmax's p(survived) is sigmoid(log-odds)."""
    from xaicore.data.tabular import TITANIC_ATTRIBUTES, TITANIC_LOGODDS

    categories = tuple(TITANIC_ATTRIBUTES.values())
    n = len(categories)
    embed = ColumnEncoder(categories, np.zeros(n), np.ones(n))
    head = nn.Linear(int(embed.groups.shape[0]), 2, dtype=torch.float64)
    with torch.no_grad():  # float64 from the start: the effects are not rounded to float32 on the way
        head.weight.zero_()
        head.weight[1] = torch.tensor([e for name in TITANIC_ATTRIBUTES for e in TITANIC_LOGODDS[name]],
                                      dtype=torch.float64)
        head.bias.copy_(torch.tensor([0.0, TITANIC_LOGODDS["intercept"]], dtype=torch.float64))
    config = {"arch": "titanic_logistic", "kind": "tabular", "n_classes": 2,
              "categories": [list(c) for c in categories]}
    return EmbeddingModel(embed, head, config).double().eval()


__all__ = ["FEATURE_ARCHS", "ColumnEncoder", "EmbeddingModel", "MeanGRU", "SumTokens", "TimeChannels",
           "TokenEmbedding", "build_embedding_model", "load_embedding_model", "save_embedding_model",
           "titanic_logistic", "train_embedding_model"]
