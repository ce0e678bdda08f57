"""Deterministic kernels are switched on for training only: the process's own torch settings
come back afterwards, even when training fails."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import write_recipe_file

from vipnb.engine import load_recipe, train
from vipnb.engine.determinism import deterministic_kernels
from vipnb.engine.recipe import from_dict


def flags():
    return (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)


@pytest.fixture
def user_settings():
    before = flags()
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    yield flags()
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.benchmark = before[2]


def test_the_block_runs_deterministic_and_restores(user_settings):
    with deterministic_kernels(from_dict({"name": "r", "deterministic": True})):
        assert flags() == (True, True, False)
    assert flags() == user_settings
    with pytest.raises(RuntimeError), deterministic_kernels(from_dict({"name": "r"})):
        raise RuntimeError("a failing run")
    assert flags() == user_settings


def test_deterministic_runs_fix_the_cublas_workspace_unless_the_user_chose_one(monkeypatch):
    deterministic = from_dict({"name": "r", "deterministic": True})
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # so that teardown restores the original
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    with deterministic_kernels(from_dict({"name": "r", "deterministic": False})):
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    with deterministic_kernels(deterministic):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with deterministic_kernels(deterministic):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_a_cublas_workspace_fixed_after_cuda_work_began_is_said_to_come_late(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with (pytest.warns(UserWarning, match="may not be deterministic"),
          deterministic_kernels(from_dict({"name": "r", "deterministic": True}))):
        pass
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_training_leaves_the_settings_as_they_were(user_settings, tiny_tree, tmp_path):
    recipe = load_recipe(write_recipe_file(tmp_path, "tiny", tiny_tree), "smoke")
    assert train(recipe, runs_root=tmp_path / "runs", progress=False).finished
    assert flags() == user_settings
