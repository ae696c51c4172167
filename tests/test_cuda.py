"""The GPU path: torch kernels and explainers on CUDA equal the CPU (numba) path. Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

import xaicore
from tests.zoo_models import fitted_params
from xaicore import XaiCoreError
from xaicore.kernels import get_backend
from xaicore.metrics import aopc, replacement_values

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# CEM on untrained models (logits within ±0.1; the label is rarely the prediction, so a PN needs a margin that
# δ = 0 does not meet): big steps, no autoencoder term
CEM_FAST = {"c_steps": 2, "n_steps": 10, "lr": 0.05, "c_init": 100.0, "gamma": 0.0, "data_range": (0.0, 1.0)}
FAST = {"integrated_gradients": {"n_steps": 8}, "lime": {"n_samples": 64, "features": "grid", "cell": 7},
        "pda": {"stride": 4, "n_samples": 3}, "occlusion": {"stride": 2}}
NUMBA = get_backend("numba")
TORCH = get_backend("torch")
FAST.update({"cem.pp": {**CEM_FAST, "kappa": 0.0}, "cem.pn": {**CEM_FAST, "kappa": 0.1}})


def test_torch_kernels_on_cuda_equal_numba_on_cpu():
    g = torch.Generator().manual_seed(3)
    ints = torch.randint(0, 3, (4, 1, 28, 28), generator=g).float()  # many exact ties
    for rel in (torch.randn(5, 3, 10, 7, generator=g), torch.randn(5, 1, 28, 28, generator=g, dtype=torch.float64),
                ints, torch.zeros(2, 1, 28, 28)):
        for side in (3, 4, 9):
            assert torch.equal(TORCH.region_order(rel.cuda(), side).cpu(), NUMBA.region_order(rel, side))


def test_numba_backend_refuses_cuda_data():
    with pytest.raises(XaiCoreError, match="numba backend runs on the CPU"):
        get_backend("numba", "cuda")
    assert get_backend("auto", "cuda").name == "torch"


@pytest.mark.parametrize("method", xaicore.methods())
def test_explain_on_cuda_equals_cpu(method, helpers, digit_batch):
    model = helpers.seeded_model("cnn", seed=4, dtype=torch.float64)
    x, target = digit_batch
    x = x.double()
    kw = dict(FAST.get(method, {}))
    kw.update(fitted_params(method, model, x))
    cpu = xaicore.explain(model, x, target, method=method, **kw)
    gpu_model = helpers.seeded_model("cnn", seed=4, dtype=torch.float64).cuda()
    before = helpers.model_state(gpu_model)
    gpu = xaicore.explain(gpu_model, x.cuda(), target.cuda(), method=method, **kw)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float64 and not gpu.requires_grad
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=1e-12)
    helpers.assert_states_equal(before, helpers.model_state(gpu_model))
    helpers.assert_no_hooks(gpu_model)
    # a target left on the CPU is moved to x's device (cuDNN may reorder sums: not bitwise)
    torch.testing.assert_close(xaicore.explain(gpu_model, x.cuda(), target, method=method, **kw), gpu,
                               rtol=1e-9, atol=1e-12)


def test_replacement_values_on_cuda_equal_cpu(digit_batch):
    x, _ = digit_batch
    r = replacement_values(x.cuda(), "uniform", seed=2)
    assert r.device.type == "cuda"
    assert torch.equal(r.cpu(), replacement_values(x, "uniform", seed=2))


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_aopc_torch_on_cuda_equals_numba_on_cpu(order, helpers, digit_batch):
    model = helpers.seeded_model("cnn", seed=5, dtype=torch.float64)
    x, target = digit_batch
    x = x.double()
    relevance = xaicore.explain(model, x, target, method="gradient_x_input")
    cpu = aopc(model, x, target, relevance, order=order, region=4, backend="numba", seed=1)
    gpu = aopc(model.cuda(), x.cuda(), target.cuda(), relevance.cuda(), order=order, region=4, backend="auto", seed=1)
    assert gpu.curve.device.type == "cuda"
    torch.testing.assert_close(gpu.curve.cpu(), cpu.curve, rtol=0, atol=1e-6)
    torch.testing.assert_close(gpu.aopc.cpu(), cpu.aopc, rtol=0, atol=1e-6)
