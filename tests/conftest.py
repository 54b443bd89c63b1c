"""Shared test setup: strict rank promotion, fixed keys, and the reference data location."""

import gzip
import os
import struct
from pathlib import Path

# Tests compile many small second-order programs and run each once: XLA's backend optimisation
# costs more than it saves there (compile time halves), and results are unchanged within tolerance.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
# The tests' data sets are small deliberate subsets (a few dozen images), which a user must ask
# for: without this, anything short of the official 60,000 + 10,000 images is refused as damaged.
os.environ.setdefault("GTN_NAS_PARTIAL_DATA", "1")

import signal  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def pythons_own_signal_handlers():
    """Each test starts from Python's own SIGINT and SIGTERM handlers, whatever an earlier test
    left (the CLI's entry installs gtn-nas's handler for the rest of the process): the signal
    tests of tests/test_faults.py passed alone and failed after the whole suite before them."""
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in stops}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for s, handler in previous.items():
        signal.signal(s, handler if handler is not None else signal.SIG_DFL)

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO_ROOT = Path(__file__).resolve().parents[1]
# The documented default for this repository's own tests: ../shared/data beside the checkout.
SHARED_DATA = Path(os.environ.get("GTN_NAS_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="module")
def xla_disk_cache(tmp_path_factory):
    """Each meta_train call jits a fresh closure; an on-disk XLA cache (shared by this session's
    modules, reset afterwards) compiles the identical second-order program once, not per call."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    old = {n: getattr(jax.config, n) for n in names}
    jax.config.update(names[0], str(tmp_path_factory.getbasetemp() / "xla-cache"))
    jax.config.update(names[1], 0.5)
    cc.reset_cache()
    yield
    for n, v in old.items():
        jax.config.update(n, v)
    cc.reset_cache()


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"reference data not found at {SHARED_DATA} (set GTN_NAS_DATA_DIR)")
    return SHARED_DATA


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory):
    """96 training (80 train + 16 validation) and 32 test 28x28 images whose class is a bright
    square's position, so a tiny net learns something."""
    return write_squares(tmp_path_factory.mktemp("data"), train=96, test=32)


def write_squares(root, train: int, test: int):
    """MNIST-named IDX files in ``root/mnist`` whose class is a bright square's position."""
    folder = root / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28))
        for i, y in enumerate(labels):
            r, c = divmod(int(y), 5)
            images[i, 4 + 12 * r:12 + 12 * r, 2 + 5 * c:7 + 5 * c] = 255
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(scope="module")
def gtn_run(tmp_path_factory, fake_mnist):
    """A 2-step tiny GTN run (checkpoint at step 2, no validation), for search/evaluate tests."""
    from gtn_nas.config import MetaTrainConfig, build_config
    from gtn_nas.commands.meta_train import meta_train

    out = tmp_path_factory.mktemp("gtn") / "run"
    meta_train(build_config(MetaTrainConfig, "tiny",
                            dict(out=str(out), data_dir=str(fake_mnist), iterations=2,
                                 eval_every=0, checkpoint_every=2, log_every=1)))
    return out
