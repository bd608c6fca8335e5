"""The coordinate check (`milr coord-check`): μP's correctness test, run on milr's own engine.

Networks that differ only in width (or, for residual nets, in depth) train a few steps at one
rate, every seed as one member of the batched engine (`train.BatchedTrainer`: the layout,
update rule, warm-up and minibatches of training itself). Before the first step and after each,
every layer's pre-activation on one fixed batch is read from `Ensemble.forward` (`preacts`): its
mean absolute value (the coordinate size) and its mean absolute change from initialisation,
averaged over seeds and the batch. Under a parametrisation that is right in width (μP) neither
grows with width; in SP the output layer's and the updates' do. The verdict is read from the
log-log slope against width (or depth) at the last step (docs/protocol.md §10).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..base.config import EstimateConfig
from ..base.cost import check_memory
from ..base.device import available_memory, device_name, matmul_precision, resolve_device
from ..base.results import network_words
from ..data.formats import Dataset
from ..data.lookup import load
from .model import Ensemble
from .train import BatchedTrainer

# The largest log-log slope of a layer's coordinate size, or of its change from
# initialisation, against width (or depth) at the last step that still counts as not growing.
# On the Gaussians over widths 16 to 128 at 4 steps (tests/test_coord_check.py), no μP slope
# was above +0.10 under SGD or Adam, while SP's output and hidden changes grew at +0.46 (SGD's
# hidden layer) to +1.11 (Adam's output layer): docs/protocol.md §10.
TOLERANCE = 0.25
# A layer's status: both slopes within ±tolerance; one below -tolerance and none above (the
# size of μP's readout at initialisation falls as width^-½ by design; SP's input layer's
# change falls too): not a failure; one above +tolerance; a value that overflowed; a change
# of exactly 0 at some width (nothing moved: no slope to read, so no verdict).
FLAT, SHRINKS, GROWS, NON_FINITE, NO_CHANGE = "flat", "shrinks", "grows", "non-finite", \
    "no change"
FAILING = (GROWS, NON_FINITE)


@dataclass(frozen=True)
class LayerSlope:
    """One layer's log-log slopes at the last step (None where undefined) and its status."""

    layer: str
    size: float | None
    change: float | None
    status: str


@dataclass(frozen=True)
class CoordCheck:
    """A coordinate check's measurements: size[l][i][t] and change[l][i][t] are layer l's mean
    |z| and mean |z - z at t = 0| at the i-th width (or depth) after t steps, averaged over
    seeds and the fixed batch."""

    config: object  # a CoordConfig
    axis: str  # "width" or "depth"
    values: tuple[int, ...]
    layers: tuple[str, ...]
    size: list[list[list[float]]]
    change: list[list[list[float]]]
    slopes: tuple[LayerSlope, ...]
    tolerance: float
    device: str
    wall_time: float

    @property
    def flagged(self) -> list[LayerSlope]:
        """The layers that fail the check: growing with the axis, or overflowed."""
        return [s for s in self.slopes if s.status in FAILING]

    @property
    def passed(self) -> bool:
        """No layer fails, and every layer's slopes could be read."""
        return all(s.status in (FLAT, SHRINKS) for s in self.slopes)

    def describe(self) -> str:
        """What was compared, in a line (every setting is in --json)."""
        c = self.config
        fixed = f"width {c.width}" if self.axis == "depth" else f"depth {c.depth}"
        return (f"coordinate check over {self.axis}s {', '.join(map(str, self.values))} at "
                f"{fixed} on {c.dataset}: lr {c.lr:g}, {c.steps} steps, {c.seeds} seed(s), "
                f"{c.optimizer}, {c.parametrization}"
                + (f" (base width {c.base_width})" if c.parametrization == "mup" else "")
                + "".join(", " + w for w in network_words(c)))

    def verdict(self) -> str:
        """The check's outcome in a line: which layers fail it and why, or which could not
        be read; layers that shrink are named, as they are no failure."""
        shrink = [s for s in self.slopes if s.status == SHRINKS]
        still = [s for s in self.slopes if s.status == NO_CHANGE]
        if self.flagged:
            return "FAILED: " + "; ".join(
                f"{s.layer} overflowed" if s.status == NON_FINITE else f"{s.layer} grows "
                f"(slopes {_f(s.size)} of size, {_f(s.change)} of change)" for s in
                self.flagged) + f"; growing means a slope above +{self.tolerance:g}"
        if still:
            return (f"no verdict: {', '.join(s.layer for s in still)} did not change at some "
                    f"{self.axis} (raise lr or steps)")
        return (f"passed: no layer's size or change grows faster than {self.axis}"
                f"^{self.tolerance:g}" + (f" (shrinking: {', '.join(s.layer for s in shrink)})"
                                         if shrink else ""))

    def to_dict(self) -> dict:
        return {"config": self.config.row(), "axis": self.axis, "values": list(self.values),
                "steps": self.config.steps, "lr": self.config.lr, "layers": list(self.layers),
                "size": self.size, "change": self.change, "tolerance": self.tolerance,
                "slopes": [asdict(s) for s in self.slopes],
                "flagged": [s.layer for s in self.flagged], "passed": self.passed,
                "verdict": self.verdict(),
                "device": self.device, "wall_time": self.wall_time}


def layer_names(cfg: EstimateConfig) -> list[str]:
    """One name per pre-activation `Ensemble.forward` gives (`preacts`), then the logits: an
    MLP's input layer and hidden layers 1 ... depth - 1 (weight layer l), a residual net's input
    layer (h_0) and the stream after each block (h_1 ... h_L)."""
    if cfg.architecture == "residual":
        return ["input", *(f"block {b}" for b in range(1, cfg.depth + 1)), "output"]
    return ["input", *(f"hidden {h}" for h in range(1, cfg.depth)), "output"]


# Over depths the networks differ in their number of layers: these are compared, by position.
DEPTH_ROLES = ("input", "block 1", "last block", "output")


def _roles(depth: int) -> list[int]:
    """The positions of DEPTH_ROLES among a residual net's layer_names."""
    return [0, 1, depth, depth + 1]


def coord_check(cfg, data: Dataset | None = None,
                on_size: Callable[[int, int], None] | None = None) -> CoordCheck:
    """The coordinate check of `cfg` (a CoordConfig): the library entry point of
    `milr coord-check`. on_size(i, value) is called before the i-th width (or depth) trains."""
    device = resolve_device(cfg.device)
    data = data or load(cfg.dataset, cfg.data_dir)
    nets = [cfg.network(v) for v in cfg.sizes]
    for net in nets:  # every network is refused, or fits, before any trains
        check_memory(net, data.n_inputs, data.classes, net.seeds, available_memory(device))
    data = data.to(device)
    fixed = data.x_train[:cfg.batch_size]
    start = time.perf_counter()
    traces = []
    for i, (value, net) in enumerate(zip(cfg.sizes, nets, strict=True)):
        trainer = BatchedTrainer(net, data, device, graphs=False)  # refuses before training
        if on_size is not None:
            on_size(i, value)
        size, change = trace(trainer, cfg.lr, fixed)
        keep = _roles(net.depth) if cfg.axis == "depth" else range(len(size))
        traces.append(([size[k] for k in keep], [change[k] for k in keep]))
    layers = DEPTH_ROLES if cfg.axis == "depth" else layer_names(nets[0])
    size = [[tr[0][k] for tr in traces] for k in range(len(layers))]
    change = [[tr[1][k] for tr in traces] for k in range(len(layers))]
    slopes = tuple(judge(name, cfg.sizes, s, c) for name, s, c in zip(layers, size, change,
                                                                      strict=True))
    return CoordCheck(cfg, cfg.axis, cfg.sizes, tuple(layers), size, change, slopes, TOLERANCE,
                      device_name(device), time.perf_counter() - start)


def trace(trainer: BatchedTrainer, lr: float, fixed: torch.Tensor
          ) -> tuple[list[list[float]], list[list[float]]]:
    """Train the seeds of the trainer's network at lr for its steps as training does (the
    trainer's own step: its layout, update rule, warm-up and minibatches, no member ever
    stopped) and read, before the first step and after each, every layer's mean |z| and mean
    |z - z_0| on `fixed`: (layers × (steps + 1)) each."""
    net = trainer.cfg
    seeds = list(range(net.seed, net.seed + net.seeds))
    trainer.admit([lr] * len(seeds), seeds)
    size, change, first = [], [], None
    with matmul_precision(net.precision):
        for t in range(net.steps + 1):
            if t:
                trainer._step()  # the step of training itself, without its stopping rules
            zs = preactivations(trainer.net, fixed)
            first = first or zs
            size.append([float(z.abs().mean()) for z in zs])
            change.append([float((z - z0).abs().mean()) for z, z0 in zip(zs, first,
                                                                            strict=True)])
    return [list(col) for col in zip(*size, strict=True)], \
        [list(col) for col in zip(*change, strict=True)]


@torch.no_grad()
def preactivations(net: Ensemble, x: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's pre-activation (K, B, width) on x (B, n_in), then the logits, in float64
    (a mean of large float32 values must not overflow in the sum)."""
    zs: list[torch.Tensor] = []
    logits = net.forward(x, preacts=zs)
    return [z.double() for z in (*zs, logits)]


def slope(xs, ys) -> float | None:
    """The least-squares slope of log y against log x; None where some y is 0 or not finite."""
    ys = np.asarray(ys, dtype=float)
    if not np.all(np.isfinite(ys)) or np.any(ys <= 0):
        return None
    return float(np.polyfit(np.log(np.asarray(xs, dtype=float)), np.log(ys), 1)[0])


def judge(layer: str, xs, size: list[list[float]], change: list[list[float]]) -> LayerSlope:
    """A layer's slopes of size and change at the last step against xs, and its status."""
    last_size, last_change = [s[-1] for s in size], [c[-1] for c in change]
    a, b = slope(xs, last_size), slope(xs, last_change)
    if not all(map(math.isfinite, last_size + last_change)):
        status = NON_FINITE
    elif any(s is not None and s > TOLERANCE for s in (a, b)):
        status = GROWS
    elif a is None or b is None:
        status = NO_CHANGE
    else:
        status = SHRINKS if min(a, b) < -TOLERANCE else FLAT
    return LayerSlope(layer, a, b, status)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f}"
