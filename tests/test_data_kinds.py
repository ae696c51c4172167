"""Tabular and text data: the generated Titanic and sentiment sets against their stated models, the tokenizer,
the CSV and text-file loaders (bad files named by line), the Dataset's per-kind checks and its saved form."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from xaicore.data import (
    FILLER,
    NEGATIVE,
    NEGATOR,
    PAD,
    POSITIVE,
    TITANIC_ATTRIBUTES,
    TITANIC_LOGODDS,
    TITANIC_PRIORS,
    UNK,
    Dataset,
    build_vocab,
    encode,
    encode_rows,
    load_breast_cancer_data,
    load_csv,
    load_dataset,
    load_saved,
    load_textfile,
    save_dataset,
    sentences,
    sentiment,
    sentiment_corpus,
    sentiment_rule,
    titanic,
    titanic_logodds,
    tokenize,
)
from xaicore.errors import XaiCoreError

ARRAYS = ("x_train", "y_train", "x_test", "y_test", "idx_test")


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def all_codes() -> np.ndarray:
    """The 48 value combinations of the Titanic attributes, (48, 4)."""
    return np.array(list(itertools.product(*(range(len(v)) for v in TITANIC_ATTRIBUTES.values()))))


# --- Titanic ----------------------------------------------------------------------------------------------

def test_titanic_logodds_is_the_stated_additive_model():
    codes = np.array([[0, 0, 0, 0], [2, 1, 1, 2], [3, 0, 1, 1]])
    expected = [-1.2 + 1.6, -1.2 + 0.0 + 1.0 + 2.3, -1.2 + 0.1 + 2.3]
    np.testing.assert_allclose(titanic_logodds(codes), expected, rtol=0, atol=1e-12)
    assert all(e == 0 for e in TITANIC_LOGODDS["embarked"])
    for name, priors in TITANIC_PRIORS.items():
        assert len(priors) == len(TITANIC_ATTRIBUTES[name]) and abs(sum(priors) - 1) < 1e-12
    with pytest.raises(XaiCoreError, match=r"column 'class': code 4 in row 1 is not one of its 4 values"):
        titanic_logodds(np.array([[0, 0, 0, 0], [4, 0, 0, 0]]))
    with pytest.raises(XaiCoreError, match=r"\(N, 4\)"):
        titanic_logodds(np.zeros((3, 3), int))


def test_titanic_survival_per_value_matches_the_generating_model():
    """P(survived | attribute = v) = Σ over the other attributes' values of their priors × sigmoid(log-odds);
    the empirical rate of 20,000 draws is within 4 standard errors of it, and so are the priors."""
    n = 20000
    ds = titanic(n, seed=1)
    x = torch.cat([ds.x_train, ds.x_test]).numpy().astype(int)
    y = torch.cat([ds.y_train, ds.y_test]).numpy()
    combos = all_codes()
    weight = np.prod([np.asarray(TITANIC_PRIORS[a])[combos[:, j]] for j, a in enumerate(TITANIC_ATTRIBUTES)], 0)
    p = sigmoid(titanic_logodds(combos))
    for j, name in enumerate(TITANIC_ATTRIBUTES):
        for v in range(len(TITANIC_ATTRIBUTES[name])):
            at = combos[:, j] == v
            expected = float((weight[at] * p[at]).sum() / weight[at].sum())
            rows = x[:, j] == v
            se = np.sqrt(expected * (1 - expected) / rows.sum())
            assert abs(y[rows].mean() - expected) < 4 * se, (name, v, y[rows].mean(), expected)
            prior = TITANIC_PRIORS[name][v]
            assert abs(rows.mean() - prior) < 4 * np.sqrt(prior * (1 - prior) / n), (name, v)
    # embarked has no effect: survival is the same whatever the port
    rates = [y[x[:, 3] == v].mean() for v in range(3)]
    assert max(rates) - min(rates) < 0.05


def test_titanic_is_a_deterministic_tabular_dataset():
    ds, again, other = titanic(seed=0), titanic(seed=0), titanic(seed=1)
    for k in ARRAYS:
        assert torch.equal(getattr(ds, k), getattr(again, k))
    assert not torch.equal(ds.x_train, other.x_train)
    assert ds.kind == "tabular" and ds.n_classes == 2 and ds.class_names == ("died", "survived")
    assert ds.feature_names == ("class", "age", "sex", "embarked") and ds.nominal == (0, 1, 2, 3)
    assert ds.categories[0] == ("1st", "2nd", "3rd", "crew") and ds.input_shape == (4,)
    assert ds.x_train.dtype == torch.float32 and ds.x_train.shape[0] + ds.x_test.shape[0] == 2201
    assert sorted(torch.cat([ds.idx_test, torch.arange(2201)[~torch.isin(torch.arange(2201), ds.idx_test)]])
                  .tolist()) == list(range(2201))


def test_breast_cancer_is_scikit_learns_embedded_data():
    from sklearn.datasets import load_breast_cancer

    sk = load_breast_cancer()
    ds = load_breast_cancer_data()
    assert ds.x_train.shape == (455, 30) and ds.x_test.shape == (114, 30) and ds.nominal == ()
    assert ds.feature_names[0] == "mean radius" and ds.class_names == ("malignant", "benign")
    np.testing.assert_array_equal(ds.x_test.numpy(), sk.data[ds.idx_test.numpy()].astype(np.float32))
    np.testing.assert_array_equal(ds.y_test.numpy(), sk.target[ds.idx_test.numpy()])


# --- text -------------------------------------------------------------------------------------------------

def test_tokenize_vocab_and_encode():
    assert tokenize("It's NOT bad -- 10/10, really!") == ["it's", "not", "bad", "10", "10", "really"]
    vocab = build_vocab([["b", "a", "c"], ["a", "b"], ["a"]])
    assert vocab == ("<pad>", "<unk>", "a", "b", "c")
    assert build_vocab([["b", "a", "c"], ["a", "b"]], min_count=2) == ("<pad>", "<unk>", "a", "b")
    ids = encode([["a", "zzz", "c"], ["b", "a", "c", "a", "b"], []], vocab, 4)
    assert ids.dtype == np.int64 and ids.tolist() == [[2, UNK, 4, PAD], [3, 2, 4, 2], [PAD] * 4]
    with pytest.raises(XaiCoreError, match="max_len"):
        encode([["a"]], vocab, 0)


def test_the_sentiment_rule():
    assert sentiment_rule(["not", "bad"]) == 1 and sentiment_rule(["not", "good"]) == 0
    assert sentiment_rule(["bad"]) == 0 and sentiment_rule(["the", "film", "was", "great"]) == 1
    assert sentiment_rule(["not", "<unk>", "good"]) == 1  # "not" before anything else flips nothing
    assert sentiment_rule(["not", "the", "bad", "film"]) == 0
    assert sentiment_rule(["not", "<pad>", "bad"]) == 1  # a pad is no word
    assert sentiment_rule(["the", "movie", "<unk>"]) == -1 and sentiment_rule(["not"]) == -1
    assert sentiment_rule(["poor", "not", "good"]) == 0  # the first keyword decides


def test_every_generated_sentence_follows_the_rule():
    corpus, labels = sentiment_corpus(2000, seed=0)
    keywords = set(POSITIVE) | set(NEGATIVE)
    assert not keywords & set(FILLER) and NEGATOR not in FILLER
    negated = 0
    for tokens, label in zip(corpus, labels, strict=True):
        assert sentiment_rule(tokens) == label
        assert sum(t in keywords for t in tokens) == 1
        n_not = tokens.count(NEGATOR)
        negated += n_not
        assert 4 <= len(tokens) - 1 - n_not <= 9 and set(tokens) <= keywords | set(FILLER) | {NEGATOR}
        if n_not:
            assert tokens[tokens.index(NEGATOR) + 1] in keywords
    assert 0.35 < negated / len(corpus) < 0.45 and 0.45 < labels.mean() < 0.55
    ds = sentiment(2000, seed=0)
    assert ds.kind == "text" and ds.x_train.dtype == torch.int64 and ds.x_train.shape == (1600, 12)
    assert ds.vocab[:2] == ("<pad>", "<unk>") and ds.class_names == ("negative", "positive")
    assert set(ds.vocab[2:]) == keywords | set(FILLER) | {NEGATOR}  # all 31 words occur in training
    for text, i, y in zip(sentences(ds, ds.x_test), ds.idx_test.tolist(), ds.y_test.tolist(), strict=True):
        assert text.split() == corpus[i] and sentiment_rule(tokenize(text)) == y == labels[i]
    train_text = sentences(ds, ds.x_train)
    assert [sentiment_rule(t.split()) for t in train_text] == ds.y_train.tolist()
    assert sentences(ds, torch.tensor([2, 999, 0, 0])) == [f"{ds.vocab[2]} <unk>"]


def test_sentiment_is_deterministic_and_its_vocab_comes_from_training():
    a, b, c = sentiment(seed=0), sentiment(seed=0), sentiment(seed=1)
    for k in ARRAYS:
        assert torch.equal(getattr(a, k), getattr(b, k))
    assert a.vocab == b.vocab and not torch.equal(a.x_train, c.x_train)
    small = sentiment(40, seed=3)  # few sentences: a test word unseen in training becomes <unk>
    train_words = {w for s in sentences(small, small.x_train) for w in s.split()}
    assert set(small.vocab[2:]) == train_words
    with pytest.raises(XaiCoreError, match="max_len >= 11"):
        sentiment(max_len=8)


# --- CSV --------------------------------------------------------------------------------------------------

CSV_ROWS = ["age,sex,fare,port,label",
            "22,male,7.25,S,no", "38,female,71.3,C,yes", "26,female,7.9,S,yes", "35,female,53.1,S,yes",
            "35,male,8.05,S,no", "54,male,51.9,S,no", "2,male,21.1,Q,no", "27,female,11.1,S,yes",
            "14,female,30.1,C,yes", "4,female,16.7,S,yes", "58,female,26.6,S,yes", "20,male,8.05,S,no"]


def write(tmp_path, lines, name="t.csv"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_csv_file_is_read_exactly(tmp_path):
    path = write(tmp_path, [*CSV_ROWS, "", ""])  # trailing blank lines are fine
    ds = load_csv(path, test_fraction=0.25, seed=2)
    assert ds.kind == "tabular" and ds.feature_names == ("age", "sex", "fare", "port")
    assert ds.categories == ((), ("female", "male"), (), ("C", "Q", "S")) and ds.nominal == (1, 3)
    assert ds.class_names == ("no", "yes") and ds.n_classes == 2 and ds.x_test.shape == (3, 4)
    for row, i, y in zip(ds.x_test.tolist(), ds.idx_test.tolist(), ds.y_test.tolist(), strict=True):
        age, sex, fare, port, label = CSV_ROWS[1 + i].split(",")
        assert row == [float(age), ("female", "male").index(sex), np.float32(fare), ("C", "Q", "S").index(port)]
        assert ds.class_names[y] == label
    again = load_csv(path, test_fraction=0.25, seed=2)
    assert all(torch.equal(getattr(ds, k), getattr(again, k)) for k in ARRAYS)
    # declared nominal: age becomes categorical (its values sorted as strings)
    ds = load_csv(path, nominal=("age", "sex", "port"))
    assert ds.categories[0][:3] == ("14", "2", "20") and ds.nominal == (0, 1, 3)
    np.testing.assert_array_equal(encode_rows([["22", "male", "7.25", "S"]], ds.feature_names, ds.categories),
                                  [[ds.categories[0].index("22"), 1, np.float32(7.25), 2]])
    # integer labels are sorted as integers
    path = write(tmp_path, ["a,label", *(f"{i},{c}" for i, c in enumerate([10, 2, 2, 10, 2, 10, 2, 10]))], "n.csv")
    assert load_csv(path).class_names == ("2", "10")
    assert load_dataset("csv", root=write(tmp_path, CSV_ROWS), nominal=["sex", "port"]).nominal == (1, 3)


@pytest.mark.parametrize("lines, kwargs, says", [
    ([*CSV_ROWS[:3], "26,female,7.9,yes", *CSV_ROWS[4:]], {}, r"line 4: 4 columns, the header has 5"),
    ([*CSV_ROWS[:3], "", *CSV_ROWS[3:]], {}, r"line 4: empty line between rows"),
    ([*CSV_ROWS[:5], "35,male,8.05,S,", *CSV_ROWS[6:]], {}, r"line 6: empty label"),
    ([*CSV_ROWS[:2], "38,,71.3,C,yes", *CSV_ROWS[3:]], {}, r"line 3: column 'sex' is empty"),
    ([*CSV_ROWS[:7], "old,male,51.9,S,no", *CSV_ROWS[8:]], {"nominal": ("sex", "port")},
     r"line 8: column 'age' is numeric, 'old' is not a finite number"),
    ([*CSV_ROWS[:4], "35,female,nan,S,yes", *CSV_ROWS[5:]], {"nominal": ("sex", "port")},
     r"line 5: column 'fare' is numeric, 'nan' is not a finite number"),
    (CSV_ROWS, {"label": "survived"}, r"no label column 'survived' \(columns: age, sex, fare, port, label\)"),
    (CSV_ROWS, {"nominal": ("cabin",)}, r"nominal columns \['cabin'\] are not feature columns"),
    (CSV_ROWS[:1], {}, r"has a header but no rows"),
    ([CSV_ROWS[0], *(r.replace("no", "yes") for r in CSV_ROWS[1:])], {}, r"a classifier needs at least 2 classes"),
])
def test_bad_csv_files_name_the_file_and_line(tmp_path, lines, kwargs, says):
    path = write(tmp_path, lines, "bad.csv")
    with pytest.raises(XaiCoreError, match=says) as err:
        load_csv(path, **kwargs)
    assert "bad.csv" in str(err.value)


def test_a_missing_csv_file(tmp_path):
    with pytest.raises(XaiCoreError, match=r"CSV file .*none.csv not found"):
        load_csv(tmp_path / "none.csv")


def test_encode_rows_refuses_unseen_values_and_other_widths():
    names, cats = ("age", "sex", "port"), ((), ("female", "male"), ("C", "S"))
    np.testing.assert_array_equal(encode_rows([["3", "male", "S"], ["1.5", " female", "C"]], names, cats),
                                  np.array([[3, 1, 1], [1.5, 0, 0]], np.float32))
    rows = np.array([["3", "male", "S"]] * 3 + [["3", "unknown", "S"]])
    with pytest.raises(XaiCoreError, match=r"^column 'sex': value 'unknown' in row 3 was not seen in training "
                                           r"\(seen: female, male\)$"):
        encode_rows(rows, names, cats)
    with pytest.raises(XaiCoreError, match=r"^row 2 has 2 columns, training had 3$"):
        encode_rows([["3", "male", "S"], ["3", "male", "S"], ["3", "male"]], names, cats)
    with pytest.raises(XaiCoreError, match=r"column 'age': value 'x' in row 0 is not a finite number"):
        encode_rows([["x", "male", "S"]], names, cats)


# --- text files -------------------------------------------------------------------------------------------

TEXT_LINES = [f"{'pos' if i % 2 else 'neg'}\t{'A fine film' if i % 2 else 'a dull film'} number {i}"
              for i in range(10)]


def test_a_text_file_is_read_exactly(tmp_path):
    path = write(tmp_path, [*TEXT_LINES, ""], "t.txt")
    ds = load_textfile(path, max_len=4, test_fraction=0.2, seed=1)
    assert ds.kind == "text" and ds.class_names == ("neg", "pos") and ds.x_test.shape == (2, 4)
    assert "dull" in ds.vocab and "fine" in ds.vocab
    for text, i, y in zip(sentences(ds, ds.x_test), ds.idx_test.tolist(), ds.y_test.tolist(), strict=True):
        label, words = TEXT_LINES[i].split("\t")
        expected = [w if w in ds.vocab else "<unk>" for w in tokenize(words)[:4]]
        assert text.split() == expected and ds.class_names[y] == label
    assert load_dataset("textfile", root=path, max_len=6).x_train.shape[1] == 6


@pytest.mark.parametrize("lines, says", [
    ([*TEXT_LINES[:3], "", *TEXT_LINES[3:]], r"line 4: empty line"),
    ([*TEXT_LINES[:4], "pos a fine film", *TEXT_LINES[4:]], r"line 5: no TAB-separated label"),
    ([*TEXT_LINES[:1], " \ta fine film", *TEXT_LINES[1:]], r"line 2: empty label"),
    ([*TEXT_LINES[:6], "pos\t  ...", *TEXT_LINES[6:]], r"line 7: empty text"),
    ([line.replace("neg", "pos") for line in TEXT_LINES], r"has 1 class\(es\); a classifier needs at least 2"),
])
def test_bad_text_files_name_the_line(tmp_path, lines, says):
    path = write(tmp_path, lines, "bad.txt")
    with pytest.raises(XaiCoreError, match=says) as err:
        load_textfile(path)
    assert "bad.txt" in str(err.value)
    with pytest.raises(XaiCoreError, match=r"text file .*none.txt not found"):
        load_textfile(tmp_path / "none.txt")


# --- the Dataset's checks and its saved form ---------------------------------------------------------------

def tab(x, **kw):
    x = torch.as_tensor(x, dtype=kw.pop("dtype", torch.float32))
    y = torch.zeros(x.shape[0], dtype=torch.long)
    fields = dict(name="t", x_train=x, y_train=y, x_test=x, y_test=y, idx_test=torch.arange(x.shape[0]),
                  n_classes=2, kind="tabular", feature_names=("a", "b"), categories=((), ("u", "v", "w")))
    return Dataset(**{**fields, **kw})


def txt(x, **kw):
    x = torch.as_tensor(x)
    y = torch.zeros(x.shape[0], dtype=torch.long)
    return Dataset(**{**dict(name="s", x_train=x, y_train=y, x_test=x, y_test=y, idx_test=torch.arange(x.shape[0]),
                             n_classes=2, kind="text", vocab=("<pad>", "<unk>", "hi")), **kw})


@pytest.mark.parametrize("make, says", [
    (lambda: tab([[0.5, 1], [1, 3]]), r"column 'b' of x_train holds 3.0 in row 1, not a code of its 3 categories"),
    (lambda: tab([[0.5, 1], [1, 1.5]]), r"column 'b' of x_train holds 1.5 in row 1"),
    (lambda: tab([[np.nan, 1]]), r"column 'a' of x_train holds nan in row 0, not a finite number"),
    (lambda: tab([[0.5, 1]], dtype=torch.float64), r"tabular x_train must be \(N, F\) float32"),
    (lambda: tab([[0.5, 1, 2]]), r"x_train has 3 columns, feature_names 2, categories 2"),
    (lambda: tab([[0.5, 1]], feature_names=("a", "b", "c")), r"x_train has 2 columns, feature_names 3"),
    (lambda: tab([[0.5, 1]], class_names=("x",)), r"1 class_names for 2 classes"),
    (lambda: txt([[2, 0], [3, 0]]), r"x_train row 1 holds token ids outside \[0, 3\)"),
    (lambda: txt([[2, 0]], vocab=("<unk>", "<pad>", "hi")), r"a text vocab starts with '<pad>', '<unk>'"),
    (lambda: txt(torch.tensor([[2, 0]], dtype=torch.int32)), r"text x_train must be \(N, T\) int64"),
    (lambda: txt([[2, 0]], kind="audio", vocab=()), r"unknown data kind 'audio'; expected one of image, tabular"),
    (lambda: txt(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), kind="image", vocab=()), r"x_train images must be float"),
    (lambda: txt(torch.zeros(1, 1, 2, 2), kind="image"), r"a vocab belongs to text data, not image"),
])
def test_a_dataset_checks_its_kind(make, says):
    with pytest.raises(XaiCoreError, match=says):
        make()


@pytest.mark.parametrize("make", [lambda: titanic(200), lambda: sentiment(100)])
def test_tabular_and_text_datasets_survive_a_round_trip(tmp_path, make):
    ds = make()
    save_dataset(ds, tmp_path / "d.npz", y_random=ds.y_train.flip(0))
    back, extra = load_saved(tmp_path / "d.npz")
    for k in ARRAYS:
        assert torch.equal(getattr(back, k), getattr(ds, k)) and getattr(back, k).dtype == getattr(ds, k).dtype
    for k in ("name", "n_classes", "kind", "feature_names", "categories", "vocab", "class_names", "nominal"):
        assert getattr(back, k) == getattr(ds, k), k
    assert list(extra) == ["y_random"] and torch.equal(extra["y_random"], ds.y_train.flip(0))
    with np.load(tmp_path / "d.npz", allow_pickle=False) as z:  # the metadata is JSON text, not a pickle
        assert json.loads(str(z["dataset_meta"]))["kind"] == ds.kind


def test_a_file_from_before_kinds_reads_as_images(tmp_path):
    x = np.zeros((3, 1, 4, 4), np.float32)
    y = np.array([0, 1, 0])
    np.savez(tmp_path / "old.npz", name=np.array("old"), n_classes=np.array(2), x_train=x, y_train=y, x_test=x,
             y_test=y, idx_test=np.arange(3))
    ds, extra = load_saved(tmp_path / "old.npz")
    assert ds.kind == "image" and ds.input_shape == (1, 4, 4) and ds.vocab == () and extra == {}


def test_load_dataset_knows_the_new_names():
    assert load_dataset("titanic", seed=1).idx_test.tolist() == titanic(seed=1).idx_test.tolist()
    assert load_dataset("breast_cancer").x_train.shape == (455, 30)
    assert load_dataset("sentiment", max_len=14).x_train.shape == (1600, 14)
    with pytest.raises(XaiCoreError, match=r"unknown dataset 'adult'; expected digits, mnist, imagefolder, npz, "
                                           r"titanic, breast_cancer, csv, sentiment or textfile"):
        load_dataset("adult")
