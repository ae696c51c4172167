"""Atomic writes (xaicore.atomic): a write that fails leaves the old file or folder as it was and no
``.partial`` that could be taken for a result; one that completes replaces the target whole."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import torch

from xaicore import XaiCoreError
from xaicore.atomic import atomic_path, partial_path, write_text
from xaicore.explain.state import FittedState


class Boom(RuntimeError):
    pass


def test_a_completed_file_write_replaces_the_target(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_text(target, "old")
    write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_a_failed_file_write_leaves_the_old_file_and_no_partial(tmp_path):
    target = tmp_path / "a.json"
    write_text(target, "old")
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise Boom
    assert target.read_text() == "old"
    assert not partial_path(target).exists()


def test_a_folder_is_replaced_whole_and_a_failed_one_can_be_kept_for_resume(tmp_path):
    target = tmp_path / "store"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "x").write_text("1")
    with pytest.raises(Boom), atomic_path(target, keep_on_error=True) as tmp:
        tmp.mkdir()
        (tmp / "y").write_text("2")
        raise Boom
    assert [p.name for p in target.iterdir()] == ["x"]
    assert (partial_path(target) / "y").read_text() == "2"  # kept: the writer resumes it
    with atomic_path(target, fresh=False) as tmp:
        (tmp / "z").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["y", "z"]
    assert not partial_path(target).exists()


def test_a_suffix_keeps_the_extension_writers_need(tmp_path):
    assert partial_path(tmp_path / "d.npz", ".npz").name == "d.npz.partial.npz"


@dataclasses.dataclass(frozen=True)
class _State(FittedState):
    WHAT: ClassVar[str] = "test state"
    RERUN: ClassVar[str] = "the test"
    weights: torch.Tensor
    n: int


def test_a_fitted_state_round_trips_and_a_foreign_file_is_one_error(tmp_path):
    state = _State(torch.arange(3.0), 7)
    back = _State.load(state.save(tmp_path / "s.pt"))
    assert torch.equal(back.weights, state.weights) and back.n == 7
    torch.save({"other": 1}, tmp_path / "foreign.pt")
    with pytest.raises(XaiCoreError, match=r"foreign.pt is not a test state \(TypeError.*rerun the test"):
        _State.load(tmp_path / "foreign.pt")
    with pytest.raises(XaiCoreError, match="test state .*missing.pt is missing; run the test"):
        _State.load(tmp_path / "missing.pt")
