"""milr: the maximal initial learning rate η* of deep ReLU networks, measured reproducibly."""

__version__ = "0.1.0"

from .config import EstimateConfig  # noqa: E402
from .search import Estimate, estimate  # noqa: E402

__all__ = ["Estimate", "EstimateConfig", "__version__", "estimate"]
