import numpy as np
import pytest
import torch

from milr.data import Dataset, gaussians


@pytest.fixture(autouse=True)
def _fixed_seeds():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def tiny() -> Dataset:
    """A small, quick instance of the paper's two-Gaussian task (16 dims, 600 + 200 samples)."""
    return gaussians(seed=1, dim=16, delta=2.0, n_train=300, n_eval=100)
