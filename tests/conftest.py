"""Fixtures shared by the test tree (which mirrors the package: ``tests/fields`` tests
``fields/``, and so on). pytest collects from any working directory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sparsefield.datasets.synthetic import generate_scene


def run_cli(*args, check: bool = True, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``sparsefield ARGS`` in a fresh interpreter, as a user would; with ``check``,
    a non-zero exit fails the test with the command's output."""
    proc = subprocess.run(
        [sys.executable, "-m", "sparsefield.launch", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def cli():
    """`run_cli`: the command line in a subprocess."""
    return run_cli


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A tiny generated scene in the Blender layout: 32x32 pixels, 16 train, 1 val and 2
    test views, alpha masks."""
    root = tmp_path_factory.mktemp("data") / "tiny"
    return generate_scene(root, name="tiny", resolution=32, n_train=16, n_val=1, n_test=2)
