"""milr: the maximal initial learning rate η* of deep ReLU networks, measured reproducibly."""

from .version import __version__

__all__ = ["Estimate", "EstimateConfig", "ScanConfig", "ScanResult", "__version__", "estimate",
           "scan"]


def __getattr__(name: str):
    """`estimate`, `scan` and their results load torch: only when used, so configuring stays
    light. Nothing is imported with the package itself, so that `milr`'s entry point reaches
    its own Ctrl-C handling (milr.cli) at once."""
    if name == "EstimateConfig":
        from .base.config import EstimateConfig

        return EstimateConfig
    if name == "estimate":
        from .engine.estimation import estimate

        return estimate
    if name == "ScanConfig":
        from .base.config import ScanConfig

        return ScanConfig
    if name == "scan":
        from .engine.scanning import scan

        return scan
    if name == "ScanResult":
        from .engine.scan import ScanResult

        return ScanResult
    if name == "Estimate":
        from .base.results import Estimate

        return Estimate
    raise AttributeError(f"module 'milr' has no attribute {name!r}")
