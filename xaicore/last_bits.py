"""A test mode that makes any host look like one whose conv and linear results depend on the batch.

On some CPUs (measured: AVX-512/AMX Xeons under torch 2.14) a conv2d or linear output changes in its last bits
with the composition of the batch it is computed in, and a linear output with the number of torch threads. A
test that asserts bitwise equality of two computations whose batches differ then passes on one host and fails
on another. With ``XAICORE_LAST_BIT_NOISE=1`` in the environment, importing xaicore installs a global forward
hook that scales every ``Conv1d/2d/3d`` and ``Linear`` output row by ``1 + k·eps`` of its dtype, with
``k ∈ {-2, …, 2}`` a function of the row's position in the batch, the batch size and, for ``Linear``, the number
of torch threads. Every process that imports xaicore with that variable set (a stage subprocess, a Dask worker)
does the same, so:

* computations of the same composition on the same thread settings stay bitwise equal (the reproducibility
  contract, docs/reproducibility.md), and
* a comparison of computations whose batches or threads differ sees last-bit differences, as on such a host.

The pipeline never sets the variable; ``make test`` runs the contract's tests under it (``pytest -m hostdep``).
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

ENV = "XAICORE_LAST_BIT_NOISE"
_HOOKED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_handle: torch.utils.hooks.RemovableHandle | None = None


def _scale(module: nn.Module, output: torch.Tensor) -> torch.Tensor:
    """(B, 1, ...) factors ``1 + k·eps``: k from the row's batch position, the batch size and (linear) threads."""
    b = output.shape[0] if output.dim() > 1 else 1
    extra = b + (torch.get_num_threads() if isinstance(module, nn.Linear) else 0)
    k = (torch.arange(b, device=output.device) * 3 + extra) % 5 - 2
    eps = torch.finfo(output.dtype).eps
    scale = 1 + k.to(output.dtype) * eps
    return scale.reshape((b,) + (1,) * (output.dim() - 1)) if output.dim() > 1 else scale


def hook(module: nn.Module, args: tuple, output: object) -> object:
    """The global forward hook of the mode: ``output`` scaled row by row (conv and linear only)."""
    if not isinstance(module, _HOOKED) or not isinstance(output, torch.Tensor) or not output.is_floating_point():
        return None
    return output * _scale(module, output)


def enabled() -> bool:
    """Whether the mode is on in this process."""
    return _handle is not None


def install(on: bool = True) -> None:
    """Switch the mode on (or off) in this process; idempotent."""
    global _handle
    if on and _handle is None:
        _handle = nn.modules.module.register_module_forward_hook(hook)
    elif not on and _handle is not None:
        _handle.remove()
        _handle = None


def install_from_env() -> None:
    """On when ``XAICORE_LAST_BIT_NOISE`` is set to a non-empty value other than ``0``."""
    if os.environ.get(ENV, "0") not in ("", "0"):
        install()
