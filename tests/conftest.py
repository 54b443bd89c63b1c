"""Shared test setup: strict rank promotion, fixed keys, and the reference data location."""

import os
from pathlib import Path

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO_ROOT = Path(__file__).resolve().parents[1]
# The documented default for this repository's own tests: ../shared/data beside the checkout.
SHARED_DATA = Path(os.environ.get("GTN_NAS_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"reference data not found at {SHARED_DATA} (set GTN_NAS_DATA_DIR)")
    return SHARED_DATA
