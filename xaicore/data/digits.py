"""The embedded default: scikit-learn's 1,797 real handwritten digits, resampled to MNIST's 28x28 frame."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from xaicore.data.core import Dataset


def load_digits28(*, size: int = 28, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Digits (8x8, 0..16) scaled to [0, 1], resized bilinearly to 20/28 of ``size`` and centred on an empty
    border as MNIST is; a stratified split fixed by ``seed``. Ships with scikit-learn: no download."""
    from sklearn.datasets import load_digits  # here, not at the top: scikit-learn takes 1 s to import
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    inner = max(1, round(size * 20 / 28))
    x = F.interpolate(x, size=(inner, inner), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    pad = size - inner
    x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    y = bunch.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=y)
    tr, te = np.sort(tr), np.sort(te)
    yt = torch.from_numpy(y)
    return Dataset(
        name="digits",
        x_train=x[tr].contiguous(),
        y_train=yt[tr].contiguous(),
        x_test=x[te].contiguous(),
        y_test=yt[te].contiguous(),
        idx_test=torch.from_numpy(te),
    )
