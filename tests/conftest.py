import pytest
import torch

from glamd_core.data import SyntheticSpec, generate

TINY = SyntheticSpec(num_train=12, num_val=4, num_test=3, image_size=64, seed=3)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A tiny embedded dataset shared by the tests (generated once per session)."""
    return generate(tmp_path_factory.mktemp("synthetic"), TINY, progress=False)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture
def canonical_keys(monkeypatch):
    """Run keys as a canonical process computes them, however this test process was started: tests that
    pin run names hold the canonical ones (``make test`` starts pytest canonically; a bare ``pytest``
    may not)."""
    from glamd_core import kernels, run_key

    monkeypatch.setattr(run_key, "kernel_key", lambda: kernels.CANONICAL_KEY)
