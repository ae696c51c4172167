"""The forward-pass engine and the features adapters: eval mode and hooks undone, packing, scores, masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from xaicore import XaiCoreError
from xaicore.engine import (
    copies_per_pass,
    eval_mode,
    gather_scores,
    hooks,
    packed_scores,
    perturbed_scores,
    target_scores,
)
from xaicore.features import Regions, Segments, Superpixels, Windows, make_features
from xaicore.kernels import region_grid


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 5 * 6, 3))


def test_eval_mode_restores_each_module_flag_even_on_error():
    model = small_cnn().train()
    model[1].eval()  # a mixed model: BatchNorm frozen
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not any(m.training for m in model.modules())
        raise RuntimeError("boom")
    assert model.training and model[0].training and not model[1].training


def test_hooks_are_removed_even_on_error():
    model = small_cnn()
    seen = []
    with pytest.raises(RuntimeError), hooks([(model[0], lambda m, i, o: seen.append(o.shape))]):
        model(torch.rand(1, 2, 10, 12))
        raise RuntimeError("boom")
    model(torch.rand(1, 2, 10, 12))
    assert len(seen) == 1 and not model[0]._forward_hooks


@pytest.mark.parametrize("score", ["logit", "probability", "log_probability"])
def test_scores_are_the_target_column(score):
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    got = gather_scores(logits, torch.tensor([1, 2]), score)
    full = {"logit": logits, "probability": logits.softmax(1), "log_probability": logits.log_softmax(1)}[score]
    assert torch.equal(got, torch.stack([full[0, 1], full[1, 2]]))
    with pytest.raises(XaiCoreError, match="unknown score"):
        gather_scores(logits, torch.tensor([1, 2]), "logits")
    with pytest.raises(XaiCoreError, match="outside 0..2"):
        target_scores(nn.Identity(), logits, torch.tensor([0, 3]))


def test_copies_per_pass():
    x = torch.zeros(8, 1, 28, 28)
    assert copies_per_pass(x, 256, 100) == 32 and copies_per_pass(x, 256, 5) == 5 and copies_per_pass(x, 4, 9) == 1
    big = torch.zeros(2, 3, 1024, 1024)
    assert copies_per_pass(big, 256, 100) == 1 and copies_per_pass(big, 256, 100, max_bytes=None) == 100


@pytest.mark.parametrize("forward_batch", [1, 7, 256])
def test_packed_scores_rows_are_copy_major_and_independent_of_packing(forward_batch):
    model = small_cnn().eval()
    x = torch.rand(3, 2, 10, 12, dtype=torch.float64)
    model = model.double()
    scale = torch.linspace(0.5, 1.5, 5, dtype=torch.float64)
    t = torch.tensor([0, 2, 1])
    def build(k0: int, k1: int) -> torch.Tensor:
        return (scale[k0:k1, None, None, None, None] * x).reshape(-1, 2, 10, 12)

    got = packed_scores(model, x, t, 5, build, forward_batch=forward_batch)
    want = torch.stack([model(s * x).gather(1, t[:, None])[:, 0] for s in scale], 1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_perturbed_scores_equal_a_loop_over_samples_and_masks():
    model = small_cnn().double().eval()
    x = torch.rand(3, 2, 10, 12, dtype=torch.float64)
    t = torch.tensor([0, 2, 1])
    feats = Regions(x, 4)  # 3 x 3 regions, the edge ones smaller
    fill = torch.rand_like(x)
    keep = torch.rand(3, 6, feats.n_features) > 0.5  # per sample
    got = perturbed_scores(model, x, t, feats, keep, fill, score="probability", forward_batch=5)
    labels = feats.labels.view(10, 12)
    for i in range(3):
        for k in range(6):
            mask = keep[i, k][labels]
            xi = torch.where(mask, x[i], fill[i])
            want = model(xi[None]).softmax(1)[0, t[i]]
            torch.testing.assert_close(got[i, k], want, rtol=1e-12, atol=1e-12)
    shared = perturbed_scores(model, x, t, feats, keep[0], fill)  # (K, F): the same masks for every sample
    for i in range(3):
        one = perturbed_scores(model, x[i:i + 1], t[i:i + 1], Regions(x[i:i + 1], 4), keep[0], fill[i:i + 1])
        torch.testing.assert_close(shared[i], one[0], rtol=1e-12, atol=1e-12)
    with pytest.raises(XaiCoreError, match="keep"):
        perturbed_scores(model, x, t, feats, keep[:, :, :3], fill)


def test_regions_are_the_aopc_grid():
    x = torch.rand(2, 3, 10, 7)
    feats = Regions(x, 3)
    grid = region_grid(10, 7, 3)
    for r in range(feats.n_features):
        assert set((feats.labels[0] == r).nonzero()[:, 0].tolist()) == set(grid[r].tolist())
    with pytest.raises(XaiCoreError, match="region"):
        Regions(x, 0)


def test_segments_apply_and_spread():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).view(2, 1, 2, 3)
    labels = torch.tensor([[[0, 0, 1], [2, 2, 1]], [[0, 1, 1], [0, 1, 1]]])  # sample 1 has 2 segments
    feats = Segments(x, labels)
    assert feats.n_features == 3 and feats.counts.tolist() == [3, 2]
    keep = torch.tensor([[[True, False, True]], [[False, True, True]]])  # (k=2, 1, F)
    out = feats.apply(keep, torch.full_like(x, -1.0)).view(2, 2, 1, 2, 3)
    assert out[0, 0, 0].tolist() == [[0, 1, -1], [3, 4, -1]]
    assert out[1, 1, 0].tolist() == [[-1, 7, 8], [-1, 10, 11]]
    spread = feats.spread(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    assert spread[0, 0].tolist() == [[1, 1, 2], [3, 3, 2]] and spread[1, 0].tolist() == [[4, 5, 5], [4, 5, 5]]


@pytest.mark.parametrize("window,stride,partial", [(4, 4, True), (4, 2, True), (5, 3, True), (5, 3, False),
                                                   (3, 1, False)])
def test_windows_cover_and_average(window, stride, partial):
    x = torch.rand(2, 2, 11, 9)
    feats = Windows(x, window, stride, partial=partial)
    cover = torch.zeros(11, 9)
    total = torch.zeros(2, 11, 9, dtype=torch.float64)
    values = torch.rand(2, feats.n_features, dtype=torch.float64)
    for f, (oy, ox) in enumerate(feats.offsets().tolist()):
        assert oy + (window if not partial else 1) <= 11 and ox + (window if not partial else 1) <= 9
        cover[oy:oy + window, ox:ox + window] += 1
        total[:, oy:oy + window, ox:ox + window] += values[:, f, None, None]
        keep = torch.ones(1, 1, feats.n_features, dtype=torch.bool)
        keep[0, 0, f] = False
        out = feats.apply(keep, torch.full_like(x, -1.0))
        box = torch.zeros(11, 9, dtype=torch.bool)
        box[oy:oy + window, ox:ox + window] = True
        assert torch.equal(out, torch.where(box, torch.full_like(x, -1.0), x))
    if partial:
        assert (cover > 0).all()
    want = torch.where(cover > 0, total / cover.clamp_min(1), torch.zeros_like(total))
    torch.testing.assert_close(feats.spread(values)[:, 0], want, rtol=1e-12, atol=1e-12)
    with pytest.raises(XaiCoreError, match="window"):
        Windows(x, 10, 1)
    with pytest.raises(XaiCoreError, match="stride"):
        Windows(x, 3, 0)


def test_superpixels():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 28, 28, generator=g)
    grid = Superpixels(x, "grid", cell=7)
    assert grid.n_features == 16 and grid.counts.tolist() == [16, 16, 16]
    slic = make_features(x, "slic", n_segments=20, compactness=1.0)  # noise: colour distances are large
    for i in range(3):
        labels = slic.labels[i].unique()
        assert labels.tolist() == list(range(int(slic.counts[i]))) and slic.counts[i] > 1
    assert torch.equal(make_features(x, "slic", n_segments=20, compactness=1.0).labels, slic.labels)  # deterministic
    with pytest.raises(XaiCoreError, match="one segment"):
        Superpixels(torch.zeros(1, 1, 28, 28), "quickshift")
    with pytest.raises(XaiCoreError, match="unknown segmentation"):
        Superpixels(x, "watershed")


class _WritesItsInput(nn.Module):
    """A model that scales its input in place: the copies it is given must not carry over to the next pass."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(0.5)
        return self.inner(x)


@pytest.mark.parametrize("forward_batch", [1, 5, 15, 64, 4096])
@pytest.mark.parametrize("masks", ["steps", "one_off", "random_per_sample"])
@pytest.mark.parametrize("adapter", ["label_maps", "grid_tiles", "grid_with_edges"])
def test_label_map_builder_gives_applys_inputs_to_the_bit(forward_batch, masks, adapter):
    """Segments write only what changes between passes (AOPC's steps, one feature off at a time): position by
    position for label maps and grids with smaller edge squares, block by block for a grid that tiles the image.
    Every pass's input must equal the dense ``apply`` of its masks, whatever the packing, per-sample maps or
    the model."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(5, 3, 12, 12, generator=g)
    fill = torch.rand(5, 3, 12, 12, generator=g)
    feats = {"label_maps": lambda: Segments(x, torch.randint(0, 7, (5, 12, 12), generator=g)),
             "grid_tiles": lambda: Regions(x, 4), "grid_with_edges": lambda: Regions(x, 5)}[adapter]()
    f = feats.n_features
    if masks == "steps":  # per sample, one more feature off each step, in a random order per sample
        rank = torch.stack([torch.randperm(f, generator=g) for _ in range(5)])
        keep = (torch.arange(f + 1)[None, :, None] <= rank[:, None, :]).transpose(0, 1)
    elif masks == "one_off":
        keep = (~torch.eye(f, dtype=torch.bool))[:, None]
    else:
        keep = torch.rand(40, 5, f, generator=g) > 0.5
    build = feats.builder(keep, fill)
    per = max(1, forward_batch // 5)
    for k0 in range(0, keep.shape[0], per):
        k1 = min(keep.shape[0], k0 + per)
        got = build(k0, k1)
        assert torch.equal(got, feats.apply(keep[k0:k1], fill)), (k0, k1)
        got.mul_(0.5)  # a model writing into its input: the next pass is rebuilt, not built on this
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 4))
    target = torch.tensor([0, 1, 2, 3, 0])
    engine_keep = keep[:, 0] if keep.shape[1] == 1 else keep.transpose(0, 1)  # (K, F) shared or (B, K, F)
    for m in (model, _WritesItsInput(model)):
        lanes = perturbed_scores(m, x, target, feats, engine_keep, fill, forward_batch=forward_batch)
        dense = torch.stack([m(feats.apply(keep[k:k + 1], fill)).gather(1, target[:, None])[:, 0]
                             for k in range(keep.shape[0])], 1)
        assert torch.allclose(lanes, dense, rtol=0, atol=1e-5)  # passes of other sizes: last bits may differ
