"""Shared fixtures: small seeded models (the zoo's CNN and MLP) and a batch of the embedded digits.

Models are rebuilt for every test (cheap), so a test that mutates one cannot leak into another.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import types
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from tests.flows.own_model import OWN_MODEL_RUN, start_own_model_run
from xaicore.data import load_digits28
from xaicore.models import build_model, train_model

INPUT_SHAPE = (1, 28, 28)
N_CLASSES = 10


def seeded_model(arch: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A zoo model whose init is drawn from ``seed`` without touching the global torch RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(arch, INPUT_SHAPE, N_CLASSES)
    return model.to(dtype).eval()


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A deep copy of every parameter and buffer, for bitwise comparisons after a call."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), f"parameter {k} changed"


def assert_no_hooks(model: nn.Module) -> None:
    for name, m in model.named_modules():
        for attr in ("_forward_hooks", "_backward_hooks", "_forward_pre_hooks", "_backward_pre_hooks"):
            hooks = getattr(m, attr, {})
            assert len(hooks) == 0, f"module {name or '<root>'} kept {len(hooks)} {attr}"


@pytest.fixture(scope="session")
def digits():
    """The embedded digits data set (1797 images, 28x28, split with seed 0)."""
    return load_digits28()


@pytest.fixture(scope="session")
def digit_batch(digits):
    """(x, target): the first 8 test digits, float32 (8, 1, 28, 28), and their labels."""
    return digits.x_test[:8].clone(), digits.y_test[:8].clone()


@contextlib.contextmanager
def single_thread():
    """Training small models is several times faster on one thread on a small, shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="session")
def _trained_cnn_state(digits) -> dict[str, torch.Tensor]:
    """A zoo CNN trained briefly on the digits (2 epochs, seed 0: ~92% test accuracy, about 1-3 s)."""
    with single_thread():
        result = train_model("cnn", digits.x_train, digits.y_train, n_classes=N_CLASSES, epochs=2, batch_size=32,
                             lr=0.003, seed=0, x_test=digits.x_test, y_test=digits.y_test, progress=False)
    assert result.test_accuracy > 0.8
    return model_state(result.model)


@pytest.fixture(scope="session")
def digits_autoencoder(digits):
    """The convolutional autoencoder of CEM and the generator, fitted on the digits (10 epochs, seed 0, about
    5 s on one thread); an :class:`~xaicore.explain.optimisation.AutoencoderState`, read-only."""
    from xaicore.explain.optimisation import fit_autoencoder

    with single_thread():
        return fit_autoencoder(digits.x_train, epochs=10, seed=0)


@pytest.fixture(scope="session")
def planted():
    """The digits with a planted watermark (class 0), stripes (class 1) and dots (:mod:`xaicore.data.planted`)."""
    from xaicore.data.planted import planted_digits

    return planted_digits()


@pytest.fixture(scope="session")
def _planted_cnn_state(planted) -> dict[str, torch.Tensor]:
    """The zoo CNN trained on the planted digits as the survey trains (12 epochs, seed 0; ~15 s on one thread)."""
    ds = planted.dataset
    with single_thread():
        result = train_model("cnn", ds.x_train, ds.y_train, n_classes=N_CLASSES, epochs=12, batch_size=32,
                             lr=0.002, seed=0, x_test=ds.x_test, y_test=ds.y_test, progress=False)
    assert result.test_accuracy > 0.9
    return model_state(result.model)


@pytest.fixture
def planted_cnn(_planted_cnn_state) -> nn.Module:
    """A fresh copy of the CNN trained on the planted digits (float32, eval mode)."""
    model = build_model("cnn", INPUT_SHAPE, N_CLASSES)
    model.load_state_dict(_planted_cnn_state)
    return model.eval()


@pytest.fixture
def trained_cnn(_trained_cnn_state) -> nn.Module:
    """A fresh copy of the briefly trained CNN (float32, eval mode); tests may change it freely."""
    model = build_model("cnn", INPUT_SHAPE, N_CLASSES)
    model.load_state_dict(_trained_cnn_state)
    return model.eval()


@pytest.fixture
def cnn() -> nn.Module:
    """The zoo CNN (conv/relu/maxpool x2, two linear layers), seeded, float32, eval mode."""
    return seeded_model("cnn", seed=0)


@pytest.fixture
def mlp() -> nn.Module:
    """The zoo MLP (three linear layers with ReLU), seeded, float32, eval mode."""
    return seeded_model("mlp", seed=1)


@pytest.fixture(params=["cnn", "mlp"])
def any_model(request) -> nn.Module:
    return seeded_model(request.param, seed=2)


@pytest.fixture(scope="session")
def helpers() -> types.SimpleNamespace:
    """The helper functions above, for test modules (which do not import conftest by name)."""
    return types.SimpleNamespace(seeded_model=seeded_model, model_state=model_state,
                                 assert_states_equal=assert_states_equal, assert_no_hooks=assert_no_hooks)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """The own-model tests last: their survey runs in the background meanwhile (pytest_collection_finish), so the
    unit tests do not wait for it."""
    own = [i for i in items if i.nodeid.startswith("tests/flows/test_own_model.py")]
    if own:
        items[:] = [i for i in items if i not in own] + own


def pytest_collection_finish(session: pytest.Session) -> None:
    """The own-model survey (tests/flows/test_own_model.py: a ResNet-18 on 32x32 images through xaicore survey,
    a few minutes on one core) starts in a child process once collection has selected it, so that it runs on the
    second core while the unit tests run on the first; its test waits for it."""
    if any(item.nodeid.startswith("tests/flows/test_own_model.py") for item in session.items):
        base = Path(tempfile.mkdtemp(prefix="xaicore-own-model-"))
        runner = os.environ.get("XAICORE_OWN_MODEL_RUNNER", "xaicore")
        session.config.stash[OWN_MODEL_RUN] = start_own_model_run(base / "project", runner)


def pytest_sessionfinish(session: pytest.Session) -> None:
    started = session.config.stash.get(OWN_MODEL_RUN, None)
    if started is not None:
        proc, proj, _ = started
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(proj.parent, ignore_errors=True)
