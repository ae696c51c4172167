"""The last-bit test mode (xaicore.last_bits): conv and linear outputs change with the batch composition (and
linear with the threads) by a few ulps, and computations of the same composition stay bitwise equal."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from xaicore import last_bits

pytestmark = pytest.mark.hostdep


@pytest.fixture
def mode():
    was = last_bits.enabled()
    last_bits.install(True)
    try:
        yield
    finally:
        last_bits.install(was)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_batch_composition_changes_the_last_bits_only(mode, dtype):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).to(dtype)
    x = torch.randn(12, 2, 8, 8, dtype=dtype)
    with torch.no_grad():
        whole = net(x)
        again = net(x)
        sliced = torch.cat([net(x[i:i + 5]) for i in range(0, 12, 5)])
    assert torch.equal(whole, again)  # the same composition: bitwise
    diff = (whole - sliced).abs()
    assert float(diff.max()) > 0  # another composition: other last bits
    eps = torch.finfo(dtype).eps
    # two layers of at most 2 ulps each, plus the rounding of the products: a few ulps of the output's scale
    assert float(diff.max()) <= 16 * eps * float(whole.abs().max())


def test_linear_depends_on_the_threads(mode):
    lin = nn.Linear(6, 3)
    x = torch.randn(4, 6)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = lin(x).detach()
        torch.set_num_threads(2)
        two = lin(x).detach()
    finally:
        torch.set_num_threads(threads)
    assert not torch.equal(one, two)


def test_gradients_flow_and_off_means_off():
    lin = nn.Linear(3, 2)
    x = torch.randn(4, 3, requires_grad=True)
    was = last_bits.enabled()
    try:
        last_bits.install(False)
        plain = lin(x)
        last_bits.install(True)
        noisy = lin(x)
        noisy.sum().backward()
    finally:
        last_bits.install(was)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert not torch.equal(plain, noisy) and torch.allclose(plain, noisy, rtol=1e-6, atol=0)


def test_the_environment_variable_switches_it_on_in_a_new_process():
    code = "import xaicore.last_bits as m, xaicore; print(m.enabled())"
    out = [subprocess.run([sys.executable, "-c", code], env={**os.environ, last_bits.ENV: v}, capture_output=True,
                          text=True, check=True).stdout.strip() for v in ("1", "0")]
    assert out == ["True", "False"]
