"""The yardstick and the textbook: η* measured the way a careful user would write it from the paper.

nn.Sequential, a DataLoader, torch.optim (SGD, SGD with momentum or Nesterov, Adam, AdamW, and a
LambdaLR warm-up) with autograd, one learning rate and one seed at a time; under
`parametrization: mup` Microsoft's `mup` package itself (MuReadout, set_base_shapes, MuSGD,
MuAdam), under `ntk` a linear layer with a constant multiplier written here. Same protocol as
milr (He init drawn from the same seed, same input-layer scale, same budget, evaluation
interval, threshold and divergence rule, written out below from the documentation rather than
from milr's engine) and the same search logic done sequentially: scan a log grid down from lr_max
until a rate trains, then bisect in log η between the largest success and the failure above it
to the same relative tolerance.

`run_one` is also the textbook that tests/test_textbook.py holds milr's engine to, verdict and
stopping step alike, so it must never call milr's Ensemble or trainer.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's own name
from torch.utils.data import DataLoader, TensorDataset

from milr.base.config import EstimateConfig
from milr.base.results import Outcome
from milr.base.seeding import batch_schedule
from milr.data.formats import Dataset
from milr.engine.model import init_weights


@dataclass(frozen=True)
class Run(Outcome):
    """One training run's result: milr's Outcome (so milr's search takes it), only its first
    nine fields set (success: the threshold met at an evaluation, no divergence by then)."""

    @property
    def verdict(self) -> str:
        """success, diverged or budget (trained too slowly): what a comparison checks."""
        return "success" if self.success else "diverged" if self.diverged else "budget"


# The protocol options this textbook implements (milr's defaults); others are refused, so that a
# comparison never runs two different protocols.
SUPPORTED = {"loss": "ce", "criterion": "accuracy", "divergence_check": "eval"}


def check_supported(cfg: EstimateConfig) -> None:
    """Refuse a config whose protocol the textbook does not implement."""
    for name, value in SUPPORTED.items():
        if getattr(cfg, name) != value:
            raise ValueError(f"the reference implements {name}={value!r} only, "
                             f"got {getattr(cfg, name)!r}")


def loss_floor(cfg: EstimateConfig, classes: int) -> float:
    """The least initial loss the divergence limit is taken from: initial_loss_floor * log C."""
    return cfg.initial_loss_floor * math.log(classes)


def batch_size(cfg: EstimateConfig, data: Dataset) -> int:
    """The minibatch size actually used: never more than the training set."""
    return min(cfg.batch_size, len(data.x_train))


class ScaledLinear(nn.Linear):
    """The NTK parametrisation's layer: x ↦ √(gain / fan_in) · x Wᵀ + b, W holding N(0, 1)
    draws (`draw`: what turns a draw of variance gain / fan_in into one of variance 1)."""

    def __init__(self, fan_in: int, fan_out: int, gain: float):
        super().__init__(fan_in, fan_out)
        self.multiplier, self.draw = math.sqrt(gain / fan_in), math.sqrt(fan_in / gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight) * self.multiplier + self.bias


GAINS = {"fan-in": 1.0, "he": 2.0, "zero": 0.0}  # output-layer variance × fan-in (protocol.md)


def _layers(cfg: EstimateConfig, n_in: int, width: int, classes: int) -> list[nn.Module]:
    """The network's modules at `width` (nn.Linear's own init; make_net sets the weights)."""
    dims = [n_in] + [width] * cfg.depth + [classes]
    par = cfg.parametrization
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        output = i == cfg.depth
        if par == "ntk":
            gain = GAINS[cfg.output_init] if output else 2.0
            layers.append(ScaledLinear(fan_in, fan_out, gain))
        elif par == "mup" and output:
            from mup import MuReadout

            layers.append(MuReadout(fan_in, fan_out))
        else:
            layers.append(nn.Linear(fan_in, fan_out))
        if not output:
            layers.append(nn.ReLU())
    return layers


def make_net(cfg: EstimateConfig, data: Dataset, seed: int) -> nn.Sequential:
    """The textbook MLP at milr's initial weights for `seed` (nn.Linear holds them transposed),
    in cfg's parametrisation: sp as drawn; ntk with the N(0, 1) draws behind them (the drawn
    weight × √(fan_in / gain)); mup by `mup.set_base_shapes` against a network of
    width base_width (and a delta network of twice that width, so that width is the width
    dimension even at width == base_width), which rescales the readout as the package does."""
    weights = init_weights(seed, data.n_inputs, cfg.depth, cfg.width, data.classes,
                           output_init=cfg.output_init)
    net = nn.Sequential(*_layers(cfg, data.n_inputs, cfg.width, data.classes))
    linears = [m for m in net if isinstance(m, nn.Linear)]
    for lin, w in zip(linears, weights, strict=True):
        with torch.no_grad():
            lin.weight.copy_(w.T * getattr(lin, "draw", 1.0))
            lin.bias.zero_()
    if cfg.parametrization == "mup":
        from mup import set_base_shapes

        def at(width: int) -> nn.Sequential:
            return nn.Sequential(*_layers(cfg, data.n_inputs, width, data.classes))

        set_base_shapes(net, at(cfg.base_width), delta=at(2 * cfg.base_width))
    return net


def optimiser(cfg: EstimateConfig, net: nn.Sequential, lr: float) -> torch.optim.Optimizer:
    """cfg's torch.optim optimizer, in three param groups: the input layer at lr ·
    input_lr_scale (condition (ii)), the hidden layers at lr, the output layer at lr ·
    output_lr_scale; under mup the package's MuSGD or MuAdam splits them further."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    groups = [{"params": list(linears[0].parameters()), "lr": lr * cfg.input_lr_scale},
              {"params": [p for m in linears[1:-1] for p in m.parameters()], "lr": lr},
              {"params": list(linears[-1].parameters()),
               "lr": lr * cfg.output_lr_scale}]
    groups = [g for g in groups if g["params"]]
    name = cfg.optimizer
    kw = {"lr": lr, "weight_decay": cfg.weight_decay}
    if name in ("sgd", "momentum", "nesterov"):
        if name != "sgd":
            kw.update(momentum=cfg.momentum, nesterov=name == "nesterov")
        impl = torch.optim.SGD
    else:
        kw.update(betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
        impl = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    if cfg.parametrization == "mup":
        from mup import MuAdam, MuSGD

        return MuSGD(groups, impl=impl, **kw) if impl is torch.optim.SGD else \
            MuAdam(groups, impl=impl, **kw)
    return impl(groups, **kw)


def warmup(cfg: EstimateConfig, opt: torch.optim.Optimizer):
    """The linear warm-up as a LambdaLR (stepped after every optimizer step): step t = 1, 2, ...
    runs at lr · min(1, t / warmup_steps); None without warm-up."""
    n = cfg.warmup_steps
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: min(1.0, (e + 1) / n)) if n else None


def train_losses(cfg: EstimateConfig, data: Dataset, lr: float, seed: int, steps: int,
                 dtype: torch.dtype = torch.float64) -> list[float]:
    """The training loss before each of the first `steps` steps of the textbook run, in
    `dtype` (data included): what tests/test_optimizers.py compares milr's engine with."""
    net = make_net(cfg, data, seed).to(dtype)
    opt = optimiser(cfg, net, lr)
    sched = warmup(cfg, opt)
    loss_fn, out = nn.CrossEntropyLoss(), []
    for step, (xb, yb) in enumerate(loader(cfg, data, seed), start=1):
        loss = loss_fn(net(xb.to(dtype)), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        out.append(loss.item())
        if step == steps:
            return out
    raise AssertionError("the schedule ended before the steps asked for")


def loader(cfg: EstimateConfig, data: Dataset, seed: int) -> DataLoader:
    """milr's data order for `seed` (consecutive seeded permutations) fed to a DataLoader."""
    order = batch_schedule(seed, len(data.x_train), cfg.steps, batch_size(cfg, data)).tolist()
    return DataLoader(TensorDataset(data.x_train, data.y_train), batch_sampler=order)


def run_one(cfg: EstimateConfig, data: Dataset, lr: float, seed: int,
            device: torch.device | str = "cpu") -> Run:
    """One run under the documented protocol.

    Every `eval_every` steps and at the end of the budget: divergence when any loss so far was
    non-finite or the last loss exceeds divergence_factor * max(first loss, loss_floor);
    otherwise success when validation accuracy >= threshold. Between evaluations, every
    `nonfinite_every` steps: divergence when any loss so far was non-finite.
    """
    check_supported(cfg)
    device = torch.device(device)
    net = make_net(cfg, data, seed).to(device)
    opt = optimiser(cfg, net, lr)
    sched = warmup(cfg, opt)
    x_eval, y_eval = data.x_eval.to(device), data.y_eval.to(device)
    loss_fn, every = nn.CrossEntropyLoss(), cfg.nonfinite_every
    limit, nonfinite = None, torch.zeros((), dtype=torch.bool, device=device)
    peak, acc = 0.0, None
    for step, (xb, yb) in enumerate(loader(cfg, data, seed), start=1):
        loss = loss_fn(net(xb.to(device)), yb.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        last = loss.detach()
        nonfinite |= ~torch.isfinite(last)  # on the device: no host sync per step
        if limit is None:
            limit = cfg.divergence_factor * last.clamp(min=loss_floor(cfg, data.classes))
        evaluating = step % cfg.eval_every == 0 or step == cfg.steps
        if evaluating:
            bad = bool(nonfinite) or not bool(last <= limit)
            correct = None if bad else correct_answers(net, x_eval, y_eval)
            acc = None if bad else (correct / len(y_eval) if len(y_eval) else math.nan)
            peak = max(peak, acc or 0.0)
            met = not bad and meets(correct, len(y_eval), cfg.threshold)
            if bad or met or step == cfg.steps:
                return Run(lr, seed, met, bad, step, acc, peak, last.item())
        elif step % every == 0 and bool(nonfinite):
            return Run(lr, seed, False, True, step, None, peak, last.item())
    raise AssertionError("the schedule ended before the budget")


@torch.no_grad()
def correct_answers(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """How many validation examples one network classifies right."""
    return int((net(x).argmax(1) == y).sum())


def meets(correct: int, n: int, threshold: float) -> bool:
    """Whether `correct` of n reach the threshold, compared exactly (docs/protocol.md): the
    threshold as the decimal it reads as, so 9000 of 10,000 meet 0.9, which a float32 mean
    (0.89999998) would not; no examples meet nothing."""
    return n > 0 and Fraction(correct, n) >= Fraction(repr(float(threshold)))


def reference_estimate(cfg: EstimateConfig, data: Dataset, device: torch.device) -> dict:
    """η* per seed by sequential scan + log bisection; returns median, per-seed values (also by
    seed), and every run (its `Run`), so that the benchmark can compare verdicts on identical
    trials."""
    factor = 10 ** (1 / cfg.grid_per_decade)
    stars, runs = {}, []
    start = time.perf_counter()

    def trains(lr: float, seed: int) -> bool:
        runs.append(run_one(cfg, data, lr, seed, device))
        return runs[-1].success

    for seed in range(cfg.seed, cfg.seed + cfg.seeds):
        lo, hi = None, None
        lr = cfg.lr_max
        while lo is None and lr >= cfg.lr_min / cfg.widen * 0.999:  # down until a rate trains
            if trains(lr, seed):
                lo = lr
            else:
                hi, lr = lr, lr / factor
        lr = cfg.lr_max * factor
        while lo is not None and hi is None and lr <= cfg.lr_max * cfg.widen * 1.001:  # or up
            if trains(lr, seed):
                lo, lr = lr, lr * factor
            else:
                hi = lr
        if lo is None or hi is None:
            continue  # no η* inside the widened range for this seed
        while hi / lo - 1 > cfg.rtol:
            mid = math.sqrt(lo * hi)
            if trains(mid, seed):
                lo = mid
            else:
                hi = mid
        stars[seed] = math.sqrt(lo * hi)
    if device.type == "cuda":
        torch.cuda.synchronize()
    values = list(stars.values())
    return {"median": statistics.median(values) if values else None, "values": values,
            "stars": stars, "runs": len(runs), "trials": runs,
            "wall_time": time.perf_counter() - start}
