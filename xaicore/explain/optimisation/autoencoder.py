"""The convolutional autoencoder of the optimisation methods: CEM's reconstruction term (Dhurandhar et al. 2018,
eq. 1–2, γ‖AE(x′) − x′‖₂²) and the generator prior of activation maximisation (Nguyen et al. 2016's idea:
optimise a code z and look at decoder(z)).

Encoder: two stride-2 3×3 convolutions (16, 32 channels, ReLU) and a linear map to ``latent`` codes; decoder:
the mirror image with 4×4 transposed convolutions and a sigmoid scaled to the training data's range, so every
decoded image is inside it. Training: Adam on the mean squared reconstruction error plus ``code_penalty``·‖z‖₂²
(a regularised deterministic autoencoder, Ghosh et al. 2020), so that codes stay near the origin; the state
keeps the 0.95 quantile of the training codes' norms as the radius a generator search stays within.
Seeded: the same data, parameters and seed give the same weights on CPU.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import OrderedDict
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from xaicore.engine import batch_slices, batched
from xaicore.errors import NotApplicable, XaiCoreError
from xaicore.explain.state import FittedState


class ConvAutoencoder(nn.Module):
    """``decode(encode(x))`` for (B, C, H, W) inputs with H and W divisible by 4, outputs in [low, high]."""

    def __init__(self, input_shape: tuple[int, int, int], latent: int, low: float, high: float) -> None:
        super().__init__()
        c, h, w = input_shape
        if h % 4 or w % 4:
            raise XaiCoreError(f"the autoencoder needs height and width divisible by 4, got {h}x{w}")
        self.low, self.high = float(low), float(high)
        flat = 32 * (h // 4) * (w // 4)
        self.encoder = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(c, 16, 3, stride=2, padding=1)), ("relu1", nn.ReLU()),
            ("conv2", nn.Conv2d(16, 32, 3, stride=2, padding=1)), ("relu2", nn.ReLU()),
            ("flatten", nn.Flatten()), ("code", nn.Linear(flat, latent)),
        ]))
        self.decoder = nn.Sequential(OrderedDict([
            ("fc", nn.Linear(latent, flat)), ("relu1", nn.ReLU()), ("unflatten", nn.Unflatten(1, (32, h // 4, w // 4))),
            ("deconv1", nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1)), ("relu2", nn.ReLU()),
            ("deconv2", nn.ConvTranspose2d(16, c, 4, stride=2, padding=1)),
        ]))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.low + (self.high - self.low) * torch.sigmoid(self.decoder(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


@dataclasses.dataclass(frozen=True)
class AutoencoderState(FittedState):
    """A trained :class:`ConvAutoencoder`: its shape, code size, the training data's range, the radius of the
    training codes (0.95 quantile of ‖z‖₂), the final training loss and the weights (a :class:`FittedState`:
    atomic save, ``weights_only`` load)."""

    WHAT: ClassVar[str] = "autoencoder state"
    RERUN: ClassVar[str] = "the autoencoder stage (python -m flows autoencoder)"

    input_shape: tuple[int, int, int]
    latent: int
    low: float
    high: float
    code_radius: float
    loss: float
    weights: dict[str, torch.Tensor]

    @functools.cached_property
    def module(self) -> ConvAutoencoder:
        """The network, in eval mode, its parameters frozen (gradients flow to its input only)."""
        ae = ConvAutoencoder(self.input_shape, self.latent, self.low, self.high)
        ae.load_state_dict(self.weights)
        ae.eval().requires_grad_(False)
        return ae

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """AE(x) on x's device and dtype."""
        return self._on(x)(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._on(z).decode(z)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._on(x).encode(x)

    def _on(self, t: torch.Tensor) -> ConvAutoencoder:
        ae = self.module
        p = next(ae.parameters())
        if p.device != t.device or p.dtype != t.dtype:
            ae = ae.to(device=t.device, dtype=t.dtype)
        return ae

    def check_input(self, shape: tuple[int, ...], owner: str) -> None:
        if tuple(shape) != tuple(self.input_shape):
            raise XaiCoreError(f"{owner}: the autoencoder was fitted on inputs of shape {tuple(self.input_shape)}, "
                               f"got {tuple(shape)}")

    def to_blob(self) -> dict[str, Any]:
        blob = super().to_blob()
        blob["input_shape"] = list(blob["input_shape"])
        return blob

    @classmethod
    def from_blob(cls, blob: Any) -> AutoencoderState:
        return cls(**{**blob, "input_shape": tuple(int(s) for s in blob["input_shape"])})


def fit_autoencoder(x_train: torch.Tensor, *, latent: int = 16, epochs: int = 30, batch_size: int = 64,
                    lr: float = 2e-3, code_penalty: float = 1e-3, seed: int = 0,
                    progress: bool = False) -> AutoencoderState:
    """Train the convolutional autoencoder on ``x_train`` (N, C, H, W) with Adam, the MSE plus
    ``code_penalty``·mean ‖z‖₂²; init and shuffles come from ``seed`` only."""
    if x_train.ndim != 4:
        kind = "tabular (B, F)" if x_train.ndim == 2 else f"{x_train.ndim}-d"
        raise NotApplicable(f"the autoencoder is fitted on images (N, C, H, W); {kind} input "
                            f"{tuple(x_train.shape)} is not supported")
    for name, value, lo in (("latent", latent, 1), ("epochs", epochs, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise XaiCoreError(f"autoencoder: {name}={value!r} must be an integer >= {lo}")
    if not lr > 0 or not code_penalty >= 0:
        raise XaiCoreError(f"autoencoder: lr={lr!r} must be > 0 and code_penalty={code_penalty!r} >= 0")
    x = x_train.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise XaiCoreError("autoencoder: the training data hold NaN or inf")
    low, high = float(x.min()), float(x.max())
    if not high > low:
        raise XaiCoreError(f"autoencoder: the training data are constant ({low})")
    shape = tuple(int(s) for s in x.shape[1:])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ae = ConvAutoencoder(shape, latent, low, high)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    ae.train()
    total = 0.0
    for _ in tqdm(range(epochs), desc="autoencoder", disable=not progress, leave=False):
        perm = torch.randperm(x.shape[0], generator=gen)
        total = 0.0
        for s in batch_slices(x.shape[0], batch_size):
            xb = x[perm[s]]
            opt.zero_grad(set_to_none=True)
            z = ae.encode(xb)
            rec = F.mse_loss(ae.decode(z), xb)
            (rec + code_penalty * z.pow(2).sum(1).mean()).backward()
            opt.step()
            total += float(rec.detach()) * xb.shape[0]
    ae.eval()
    with torch.no_grad():
        norms = batched(lambda xb: ae.encode(xb).norm(dim=1), x, size=512)
    weights = {k: v.detach().clone() for k, v in ae.state_dict().items()}
    return AutoencoderState(shape, latent, low, high, float(torch.quantile(norms, 0.95)),  # type: ignore[arg-type]
                            total / x.shape[0], weights)
