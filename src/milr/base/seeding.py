"""What a seed determines apart from the network: independent random streams and the data order."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

# the streams drawn from one user seed; RANDOMNESS: a model's own random operations (dropout)
WEIGHTS, DATA_ORDER, START_VECTOR, RANDOMNESS = 0, 1, 2, 3


def member_seed(seed: int, stream: int) -> int:
    """An independent 63-bit seed per purpose (WEIGHTS, DATA_ORDER, ...) from one seed."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(2, np.uint64)[0] >> 1)


@lru_cache(maxsize=64)
def batch_schedule(seed: int, n: int, steps: int, batch: int) -> torch.Tensor:
    """Indices of every minibatch of a run (steps, batch): consecutive epochs' permutations.

    Cached (every round of a search asks again for the same seeds); callers must not modify it.
    """
    rng = np.random.default_rng(member_seed(seed, DATA_ORDER))
    epochs = math.ceil(steps * batch / n)
    order = np.concatenate([rng.permutation(n) for _ in range(epochs)])[: steps * batch]
    return torch.from_numpy(order.reshape(steps, batch))
