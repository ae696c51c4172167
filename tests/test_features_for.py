"""features_for: the one place that picks a features adapter by input kind, with its fill."""

import pytest
import torch

from xaicore.errors import NotApplicable, XaiCoreError
from xaicore.features import (
    PAD,
    UNK,
    Columns,
    ColumnStats,
    Regions,
    Superpixels,
    Tokens,
    Windows,
    adapter_for,
    features_for,
)
from xaicore.features.fills import PERTURBATIONS


def test_each_kind_gets_its_adapter_and_fill():
    img = torch.rand(2, 3, 8, 8)
    f, fill = features_for(img, region=4)
    assert isinstance(f, Regions) and f.n_features == 4 and torch.equal(fill, torch.zeros_like(img))
    f, fill = features_for(img, image="windows", window=4, stride=2, fill="blur")
    assert isinstance(f, Windows) and fill.shape == img.shape and not torch.equal(fill, img)
    f, fill = features_for(img, "grid", image="slic", cell=4, fill="segment_mean")
    assert isinstance(f, Superpixels) and f.n_features == 4
    torch.testing.assert_close(fill[:, :, :4, :4], img[:, :, :4, :4].mean((2, 3), keepdim=True).expand(-1, -1, 4, 4))

    rows = torch.tensor([[1.0, 5.0], [3.0, 7.0]])
    stats = ColumnStats.fit(torch.tensor([[0.0, 2.0], [2.0, 4.0]]))
    f, fill = features_for(rows, reference=stats, fill="blur")  # a named fill does not apply to columns
    assert isinstance(f, Columns) and torch.equal(fill, torch.tensor([[1.0, 3.0], [1.0, 3.0]]))

    text = torch.tensor([[4, 5, PAD], [6, PAD, PAD]])
    f, fill = features_for(text)
    assert isinstance(f, Tokens) and f.counts.tolist() == [2, 1] and bool((fill == UNK).all())


def test_bad_units_and_missing_statistics_are_named():
    with pytest.raises(XaiCoreError, match="features 'columns' do not apply to image"):
        adapter_for(torch.rand(1, 1, 4, 4), "columns", owner="lime")
    with pytest.raises(XaiCoreError, match="unknown features 'pixels'"):
        adapter_for(torch.rand(1, 1, 4, 4), "pixels")
    with pytest.raises(XaiCoreError, match="needs the training columns' statistics"):
        adapter_for(torch.rand(2, 3))
    with pytest.raises(NotApplicable, match="images, tables and text"):
        adapter_for(torch.rand(2, 3, 4))
    with pytest.raises(XaiCoreError, match="aopc: unknown perturbation 'zero'"):
        features_for(torch.rand(1, 1, 4, 4), region=2, fill="zero", fills=PERTURBATIONS, owner="aopc")


def test_pool_and_ranking():
    rel = torch.arange(16.0).view(1, 1, 4, 4).expand(1, 2, 4, 4)
    regions = Regions(rel.clone(), 2)
    # region sums over both channels: [[0,1,4,5], [2,3,6,7], [8,9,12,13], [10,11,14,15]] x 2
    assert regions.pool(rel).tolist() == [[20.0, 36.0, 84.0, 100.0]]
    assert regions.ranking(rel).tolist() == [[3, 2, 1, 0]]
    assert regions.ranking(rel, descending=False).tolist() == [[0, 1, 2, 3]]
    grid = Superpixels(rel.clone(), "grid", cell=2)
    assert torch.equal(grid.pool(rel), regions.pool(rel))

    text = torch.tensor([[4, 5, PAD, PAD]])
    toks = Tokens(text)
    r = torch.tensor([[1.0, 2.0, 9.0, 9.0]])  # padding's relevance never ranks
    assert toks.ranking(r).tolist() == [[1, 0, 2, 3]] and toks.ranking(r, descending=False).tolist() == [[0, 1, 2, 3]]
    assert toks.pool(r).tolist() == r.tolist()
