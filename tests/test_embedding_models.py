"""Models for tabular and text data: head(embed(x)), the per-feature pooling explainers rely on, the Titanic
generating model in closed form, training against the Bayes rule and the sentiment rule, saved weights."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from xaicore.data import TITANIC_ATTRIBUTES, TITANIC_LOGODDS, UNK, sentiment, titanic, titanic_logodds
from xaicore.errors import XaiCoreError
from xaicore.models.embedding import (
    FEATURE_ARCHS,
    ColumnEncoder,
    EmbeddingModel,
    TokenEmbedding,
    build_embedding_model,
    load_embedding_model,
    save_embedding_model,
    titanic_logistic,
    train_embedding_model,
)

EPOCHS = {"mlp": 10, "bag": 8, "conv": 5, "gru": 6}


@pytest.fixture(scope="module")
def titanic_ds():
    return titanic()


@pytest.fixture(scope="module")
def sentiment_ds():
    return sentiment()


def seeded(arch, ds, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_embedding_model(arch, ds).eval()


def test_column_encoder_in_closed_form():
    enc = ColumnEncoder(((), ("a", "b", "c"), ()), mean=[1.0, 0.0, 2.0], std=[2.0, 1.0, 0.0])  # std 0 -> 1
    x = torch.tensor([[3.0, 2.0, 5.0], [1.0, 0.0, 2.0]])
    assert enc.groups.tolist() == [0, 1, 1, 1, 2]
    torch.testing.assert_close(enc(x), torch.tensor([[1.0, 0, 0, 1, 3], [0, 1, 0, 0, 0]]), rtol=0, atol=0)
    r = torch.tensor([[1.0, 2, 3, 4, 5], [-1, 1, 1, 1, 0.5]])
    torch.testing.assert_close(enc.pool(r), torch.tensor([[1.0, 9, 5], [-1, 3, 0.5]]), rtol=0, atol=0)
    with pytest.raises(XaiCoreError, match=r"^column 1: code 7 is not one of the 3 training categories$"):
        enc(torch.tensor([[0.0, 1, 0], [0, 7, 0]]))
    with pytest.raises(XaiCoreError, match=r"column 1: code 1.5 is not one of the 3"):
        enc(torch.tensor([[0.0, 1.5, 0]]))
    with pytest.raises(XaiCoreError, match=r"expects \(B, 3\) columns"):
        enc(torch.zeros(2, 4))


def test_token_embedding_pads_are_zero_and_unknown_ids_are_unk():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        emb = TokenEmbedding(5, 3)
    out = emb(torch.tensor([[2, 0, 7, -1, UNK]])).detach()
    assert out.shape == (1, 5, 3) and float(out[0, 1].abs().sum()) == 0.0
    assert torch.equal(out[0, 2], out[0, 4]) and torch.equal(out[0, 3], out[0, 4])  # 7 and -1 read as UNK
    r = torch.arange(24.0).reshape(2, 4, 3)
    torch.testing.assert_close(emb.pool(r), r.sum(-1), rtol=0, atol=0)


@pytest.mark.parametrize("arch", [a for archs in FEATURE_ARCHS.values() for a in archs])
def test_forward_is_head_of_embed(arch, titanic_ds, sentiment_ds):
    ds = titanic_ds if arch in FEATURE_ARCHS["tabular"] else sentiment_ds
    model = seeded(arch, ds)
    assert isinstance(model, EmbeddingModel) and model.arch == arch and model.kind == ds.kind
    assert [name for name, _ in model.named_children()] == ["embed", "head"]
    x = ds.x_test[:7]
    e = model.embed(x)
    torch.testing.assert_close(model(x), model.head(e), rtol=0, atol=0)
    assert model(x).shape == (7, 2)
    assert model.embed.pool(torch.ones_like(e)).shape == (7, ds.x_test.shape[1])
    assert any(isinstance(m, nn.ReLU) for m in model.head.modules()) == (arch != "gru")
    if ds.kind == "tabular":  # one-hot codes: each column's dims sum to 1
        assert e.shape == (7, 11) and torch.equal(model.embed.pool(e), torch.ones(7, 4))


def test_build_feature_model_refuses_unknown_archs(titanic_ds, sentiment_ds, digits):
    with pytest.raises(XaiCoreError, match=r"unknown tabular architecture 'gru'; known: mlp"):
        build_embedding_model("gru", titanic_ds)
    with pytest.raises(XaiCoreError, match=r"unknown text architecture 'mlp'; known: bag, conv, gru"):
        build_embedding_model("mlp", sentiment_ds)
    with pytest.raises(XaiCoreError, match=r"not 'image'"):
        build_embedding_model("mlp", digits)


def test_titanic_logistic_is_the_generating_model():
    model = titanic_logistic()
    codes = np.array(list(itertools.product(*(range(len(v)) for v in TITANIC_ATTRIBUTES.values()))))
    assert codes.shape == (48, 4)
    x = torch.from_numpy(codes.astype(np.float64))
    with torch.no_grad():
        logits = model(x)
    assert logits.dtype == torch.float64 and torch.equal(logits[:, 0], torch.zeros(48, dtype=torch.float64))
    truth = titanic_logodds(codes)
    np.testing.assert_allclose(logits[:, 1].numpy(), truth, rtol=0, atol=1e-10)
    np.testing.assert_allclose(logits.softmax(1)[:, 1].numpy(), 1 / (1 + np.exp(-truth)), rtol=0, atol=1e-12)
    # Gradient x Input at the embedding, pooled per column: each attribute's effect, summing to the log-odds
    e = model.embed(x).requires_grad_(True)
    model.head(e)[:, 1].sum().backward()
    per_column = model.embed.pool(e.grad * e.detach())
    effects = np.stack([np.asarray(TITANIC_LOGODDS[a])[codes[:, j]] for j, a in enumerate(TITANIC_ATTRIBUTES)], 1)
    np.testing.assert_allclose(per_column.numpy(), effects, rtol=0, atol=1e-12)
    np.testing.assert_allclose(per_column.sum(1).numpy() + TITANIC_LOGODDS["intercept"], truth, atol=1e-12)


def test_an_mlp_on_titanic_is_as_good_as_the_bayes_rule(titanic_ds, one_thread):
    model, train_acc, test_acc = train_embedding_model("mlp", titanic_ds, epochs=EPOCHS["mlp"])
    assert not model.training
    logodds = titanic_logodds(titanic_ds.x_test.numpy().astype(np.int64))
    bayes = float(((logodds > 0) == titanic_ds.y_test.numpy().astype(bool)).mean())
    assert 0.6 < bayes and test_acc >= bayes - 0.03, (test_acc, bayes)


@pytest.mark.parametrize("arch", FEATURE_ARCHS["text"])
def test_text_models_learn_the_sentiment_rule(arch, sentiment_ds, one_thread):
    _, train_acc, test_acc = train_embedding_model(arch, sentiment_ds, epochs=EPOCHS[arch])
    assert test_acc >= 0.97 and train_acc >= 0.97, (arch, train_acc, test_acc)


def test_training_is_deterministic(sentiment_ds, titanic_ds, one_thread):
    for arch, ds in (("conv", sentiment_ds), ("mlp", titanic_ds)):
        a = train_embedding_model(arch, ds, epochs=1, seed=3)[0].state_dict()
        b = train_embedding_model(arch, ds, epochs=1, seed=3)[0].state_dict()
        c = train_embedding_model(arch, ds, epochs=1, seed=4)[0].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("arch", ["mlp", "gru", "titanic_logistic"])
def test_saved_feature_models_give_identical_logits(arch, tmp_path, titanic_ds, sentiment_ds):
    if arch == "titanic_logistic":
        model, ds = titanic_logistic(), titanic_ds
    else:
        ds = titanic_ds if arch == "mlp" else sentiment_ds
        model = seeded(arch, ds, seed=5)
    save_embedding_model(model, tmp_path / "m.pt", arch=model.arch, dataset=ds.name)
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["arch"] == arch and meta["kind"] == ds.kind and meta["dataset"] == ds.name
    assert not list(tmp_path.glob("*.partial"))
    back = load_embedding_model(tmp_path / "m.pt")
    assert not back.training and back.config == {**model.config, "dataset": ds.name}
    x = ds.x_test[:9].to(torch.float64) if arch == "titanic_logistic" else ds.x_test[:9]
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


def test_bad_feature_model_files_are_named(tmp_path, sentiment_ds):
    with pytest.raises(XaiCoreError, match=r"feature model .*none.pt \(or none.json\) is missing"):
        load_embedding_model(tmp_path / "none.pt")
    model = seeded("bag", sentiment_ds)
    save_embedding_model(model, tmp_path / "m.pt")
    meta = json.loads((tmp_path / "m.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**meta, "dim": 8}))
    with pytest.raises(XaiCoreError, match=r"feature model weights .*m.pt do not fit its bag"):
        load_embedding_model(tmp_path / "m.pt")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(XaiCoreError, match=r"feature model description .*m.json is corrupt"):
        load_embedding_model(tmp_path / "m.pt")
    (tmp_path / "m.json").write_text(json.dumps(meta))
    (tmp_path / "m.pt").write_bytes(b"garbage")
    with pytest.raises(XaiCoreError, match=r"feature model weights .*m.pt cannot be read"):
        load_embedding_model(tmp_path / "m.pt")
    with pytest.raises(XaiCoreError, match=r"arch 'gru' given for a 'bag' model"):
        save_embedding_model(model, tmp_path / "n.pt", arch="gru")
    with pytest.raises(XaiCoreError, match=r"saves a EmbeddingModel"):
        save_embedding_model(nn.Linear(2, 2), tmp_path / "n.pt")
