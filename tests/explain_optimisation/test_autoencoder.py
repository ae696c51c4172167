"""The convolutional autoencoder shared by CEM's reconstruction term and activation maximisation's generator:
seeded training, its reconstruction error on held-out digits, its range, and save/load with weights_only."""

from __future__ import annotations

import pickle

import pytest
import torch

import xaicore
from xaicore.errors import NotApplicable, XaiCoreError
from xaicore.explain.optimisation import AutoencoderState, fit_autoencoder


@pytest.fixture
def small_state(digits_autoencoder) -> AutoencoderState:
    return digits_autoencoder


def test_same_seed_same_weights_and_another_seed_others(digits, one_thread):
    first = fit_autoencoder(digits.x_train[:256], epochs=2, seed=3)
    again = fit_autoencoder(digits.x_train[:256], epochs=2, seed=3)
    assert all(torch.equal(again.weights[k], first.weights[k]) for k in first.weights)
    other = fit_autoencoder(digits.x_train[:256], epochs=2, seed=4)
    assert not torch.equal(other.weights["encoder.conv1.weight"], first.weights["encoder.conv1.weight"])


def test_reconstructs_held_out_digits_far_better_than_their_mean(digits, small_state):
    x = digits.x_test
    with torch.no_grad():
        mse = float((small_state.reconstruct(x) - x).pow(2).mean())
        baseline = float((digits.x_train.mean(0, keepdim=True) - x).pow(2).mean())
    assert mse < 0.25 * baseline, (mse, baseline)
    assert small_state.low == 0.0 and small_state.high == float(digits.x_train.max())
    with torch.no_grad():
        out = small_state.decode(torch.randn(64, small_state.latent) * 10)
    assert out.min() >= small_state.low and out.max() <= small_state.high  # every decoded image is in range
    assert small_state.code_radius > 0


def test_save_load_round_trip_and_a_pickle_payload_is_refused(small_state, tmp_path, digits):
    path = small_state.save(tmp_path / "ae.pt")
    back = AutoencoderState.load(path)
    assert back.input_shape == (1, 28, 28) and back.latent == small_state.latent
    x = digits.x_test[:4]
    with torch.no_grad():
        assert torch.equal(back.reconstruct(x), small_state.reconstruct(x))
    evil = tmp_path / "evil.pt"
    torch.save({"input_shape": [1, 28, 28], "hook": print}, evil)  # a callable in the pickle
    with pytest.raises(XaiCoreError, match=r"autoencoder state .*evil\.pt holds a pickled object \(print\), "
                                           r"not only tensors; .*; rerun the autoencoder stage"):
        AutoencoderState.load(evil)
    evil.write_bytes(pickle.dumps(print))  # a bare pickle, not a torch file
    with pytest.raises(XaiCoreError, match=r"autoencoder state .*evil\.pt cannot be read \(not a torch file"):
        AutoencoderState.load(evil)


def test_fit_through_the_registry_gives_cem_its_state(cnn, digits):
    state = xaicore.fit(cnn, digits.x_train[:64], method="cem.pn", epochs=1)
    assert isinstance(state, AutoencoderState)
    with pytest.raises(XaiCoreError, match="has no parameter 'batch_size'"):
        xaicore.fit(cnn, digits.x_train[:64], method="cem.pn", batch_size=8)


@pytest.mark.parametrize("kw,match", [({"latent": 0}, "latent=0 must be an integer >= 1"),
                                      ({"lr": 0.0}, "lr=0.0 must be > 0")])
def test_bad_parameters(kw, match, digits):
    with pytest.raises(XaiCoreError, match=match):
        fit_autoencoder(digits.x_train[:8], **kw)


def test_bad_data():
    with pytest.raises(NotApplicable, match=r"tabular \(B, F\)"):
        fit_autoencoder(torch.rand(8, 10))
    with pytest.raises(XaiCoreError, match="divisible by 4"):
        fit_autoencoder(torch.rand(8, 1, 10, 10))
    with pytest.raises(XaiCoreError, match="NaN or inf"):
        fit_autoencoder(torch.full((8, 1, 8, 8), float("nan")))
