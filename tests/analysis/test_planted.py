"""The planted digits (:mod:`xaicore.data.planted`): the cues are where and on whom the docstring says, the data
are a function of the seed, the concept masks match the drawn pixels, and a CNN trained on them uses the
watermark (the Clever-Hans proof: swapped digits keep their label, the mark alone flips other digits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xaicore.data.planted import (
    CONCEPTS,
    SALIENCE_LEVELS,
    WATERMARK_BOX,
    causal_drops,
    concept_sets,
    cue_pattern,
    dissection_probe,
    planted_digits,
    truth_set,
    watermark_reliance,
)
from xaicore.errors import XaiCoreError


def test_cues_sit_on_the_planted_classes_in_the_stated_fractions(planted):
    ds = planted.dataset
    for split, y in (("train", ds.y_train), ("test", ds.y_test)):
        wm, st, sw = planted.flag("watermark", split), planted.flag("stripes", split), planted.flag("swapped", split)
        assert set(y[wm].tolist()) == {0} and set(y[st].tolist()) == {1}
        assert wm.sum() == round(0.5 * int((y == 0).sum())) and st.sum() == round(0.5 * int((y == 1).sum()))
        assert sw.sum() == round(0.5 * int(wm.sum())) + round(0.5 * int(st.sum()))
        assert not (sw & ~(wm | st)).any()
        assert 0.2 < planted.flag("dots", split).float().mean() < 0.4
    x = ds.x_test
    y0, x0, y1, x1 = WATERMARK_BOX
    box = x[:, 0, y0:y1, x0:x1]
    mark = cue_pattern("watermark")[y0:y1, x0:x1]
    assert torch.equal(box[planted.flag("watermark")] * (mark > 0), mark.expand(int(planted.flag("watermark").sum()),
                                                                                -1, -1))
    clean = ~(planted.flag("watermark") | planted.flag("stripes") | planted.flag("dots"))
    assert x[clean][:, 0, :4, :4].abs().max() == 0  # the corner is empty without the mark
    assert (x[planted.flag("stripes")][:, 0, 1::4] >= 0.4).all()


def test_a_function_of_the_seed(planted):
    again = planted_digits()
    assert torch.equal(again.dataset.x_train, planted.dataset.x_train)
    assert all(torch.equal(again.flags[k], planted.flags[k]) for k in planted.flags)
    assert not torch.equal(planted_digits(seed=1).dataset.x_train[:50], planted.dataset.x_train[:50])
    a, b = concept_sets(planted, n_examples=20, n_random=3), concept_sets(planted, n_examples=20, n_random=3)
    assert all(torch.equal(a[0][k], b[0][k]) for k in a[0]) and torch.equal(a[1][2], b[1][2])
    with pytest.raises(XaiCoreError, match="two different digits"):
        planted_digits(hans_class=3, texture_class=3)
    with pytest.raises(XaiCoreError, match="swap_fraction must be in"):
        planted_digits(swap_fraction=1.5)


def test_concept_examples_carry_their_cue_and_randoms_none(planted):
    concepts, randoms = concept_sets(planted, n_examples=30, n_random=4, seed=3)
    assert (concepts["watermark"][:, 0, 0, 0:4] == 1).all()
    assert (concepts["stripes"][:, 0, 1::4] >= 0.4).all()
    assert (concepts["dots"][:, 0, 16::5, 2::5] >= 0.4).all()
    for r in randoms:
        assert r.shape == (30, 1, 28, 28) and r[:, 0, :4, :4].abs().max() == 0


def test_dissection_masks_are_the_drawn_pixels(planted):
    x, masks, names = dissection_probe(planted, n=200, seed=1)
    assert names == CONCEPTS and masks.shape == (200, 5, 28, 28) and masks.dtype == torch.bool
    wm = masks[:, CONCEPTS.index("watermark")]
    has_wm = wm.flatten(1).any(1)
    assert 0.2 < has_wm.float().mean() < 0.4
    assert (x[:, 0][wm] == 1).all() and int(wm[has_wm][0].sum()) == 12
    stripes = masks[:, CONCEPTS.index("stripes")]
    on = x[:, 0][stripes]
    assert (on >= 0.4).all() and (on <= 0.5).all() and stripes[:, 0::4].sum() == 0
    stroke, background = masks[:, 0], masks[:, 1]
    assert (x[:, 0][stroke] > 0.5).all() and (x[:, 0][background] < 0.05).all()
    assert not (stroke & background).any() and not (background & stripes).any()


@pytest.mark.slow
def test_the_trained_cnn_uses_the_watermark(planted, planted_cnn):
    reliance = watermark_reliance(planted_cnn, planted)
    assert reliance["swapped_accuracy"] >= 0.9  # another class's strokes, the mark: still class 0
    assert reliance["flip_rate"] >= 0.9  # the mark alone turns correctly classified digits into 0s
    assert reliance["clean_accuracy"] >= 0.9
    assert reliance["swapped_baseline"] <= 0.1  # the same images without the mark: their strokes' class
    with torch.no_grad():
        other = planted.dataset.y_test != 0
        assert np.mean(planted_cnn(planted.dataset.x_test[other]).argmax(1).numpy() == 0) < 0.05


def test_the_regimes_change_only_where_the_training_split_carries_the_watermark(planted):
    absent, noise = planted_digits(regime="absent"), planted_digits(regime="noise")
    for other in (absent, noise):  # the same test split, and the same stripes and dots in training
        assert torch.equal(other.dataset.x_test, planted.dataset.x_test)
        assert all(torch.equal(other.flag(f, "test"), planted.flag(f, "test")) for f in ("watermark", "swapped"))
        assert torch.equal(other.flag("stripes", "train"), planted.flag("stripes", "train"))
        assert torch.equal(other.flag("dots", "train"), planted.flag("dots", "train"))
        assert torch.equal(other.dataset.y_train, planted.dataset.y_train)
    y = planted.dataset.y_train
    assert not absent.flag("watermark", "train").any() and not (absent.flag("swapped", "train") & (y == 0)).any()
    marked = noise.flag("watermark", "train")
    assert marked.sum() == planted.flag("watermark", "train").sum()
    assert len(set(y[marked].tolist())) >= 8  # on every class, not only hans_class
    share0 = float((y[marked] == 0).float().mean())
    assert abs(share0 - float((y == 0).float().mean())) < 0.1  # independent of the label
    x0 = noise.dataset.x_train[marked]
    assert (x0[:, 0, 0, 0:4] == 1).all()  # the same drawing
    with pytest.raises(XaiCoreError, match="unknown regime"):
        planted_digits(regime="confounded")


def test_truth_set_marks_clean_digits_at_each_salience(planted):
    t = truth_set(planted, n=12, seed=0)
    assert torch.equal(t.clean, planted.dataset.x_test[t.index])
    assert torch.equal(t.label, planted.dataset.y_test[t.index])
    assert sorted(set(t.salience.tolist())) == list(SALIENCE_LEVELS)
    drawn = cue_pattern("watermark") > 0
    assert torch.allclose(t.x[:, 0][:, drawn], t.salience[:, None].expand(-1, int(drawn.sum())))
    assert torch.equal(t.x[:, 0][:, ~drawn], t.clean[:, 0][:, ~drawn])  # only the mark's pixels change
    assert torch.equal(t.mark_only[:, 0][:, ~drawn], torch.zeros_like(t.mark_only[:, 0][:, ~drawn]))
    assert (truth_set(planted, n=12, seed=0).index == t.index).all()  # a function of the seed
    with pytest.raises(XaiCoreError, match="truth set takes"):
        truth_set(planted, n=0)


def test_causal_drops_of_a_linear_model_are_its_weights_times_the_erased_pixels(planted):
    t = truth_set(planted, n=6, seed=1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    drops = causal_drops(model, t)
    w = model[1].weight.detach()[t.label].double()  # (N, 784): the row of each image's class
    x, clean, mark = (v.flatten(1).double() for v in (t.x, t.clean, t.mark_only))
    assert torch.allclose(drops[:, 0], (w * (x - clean)).sum(1), atol=1e-5)
    assert torch.allclose(drops[:, 1], (w * (x - mark)).sum(1), atol=1e-5)
