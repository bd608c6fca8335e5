"""The yardstick: η* measured the way a careful user would write it from the paper.

nn.Sequential, a DataLoader, torch.optim.SGD, one learning rate and one seed at a time. Same
protocol as milr (He init drawn from the same seed, same input-layer scale, same budget,
evaluation interval, threshold and divergence rule) and the same search logic done sequentially:
scan a log grid down from lr_max until a rate trains, then bisect in log η between the largest
success and the failure above it to the same relative tolerance.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from milr.config import EstimateConfig
from milr.data import Dataset
from milr.model import init_weights
from milr.train import batch_schedule


def make_net(cfg: EstimateConfig, data: Dataset, seed: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    weights = init_weights(seed, data.n_inputs, cfg.depth, cfg.width, data.classes)
    for i, w in enumerate(weights):
        lin = nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(w.T)
            lin.bias.zero_()
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def train_one(cfg: EstimateConfig, data: Dataset, lr: float, seed: int,
              device: torch.device) -> bool:
    """One run: True when validation accuracy reaches the threshold before the budget ends."""
    net = make_net(cfg, data, seed).to(device)
    first, rest = list(net[0].parameters()), [p for m in list(net)[1:] for p in m.parameters()]
    opt = torch.optim.SGD([{"params": first, "lr": lr * cfg.input_lr_scale},
                           {"params": rest, "lr": lr}], lr=lr)
    # The same data order as milr (consecutive seeded permutations), so that the two η* can be
    # compared seed by seed; the DataLoader still does the batching and collation.
    order = batch_schedule(seed, len(data.x_train), cfg.steps, cfg.batch_size).tolist()
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_sampler=order)
    x_eval, y_eval = data.x_eval.to(device), data.y_eval.to(device)
    loss_fn = nn.CrossEntropyLoss()
    step, limit = 0, None
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        loss = loss_fn(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if limit is None:
            limit = cfg.divergence_factor * max(loss.item(), math.log(data.classes))
        if step % cfg.eval_every and step != cfg.steps:
            continue
        if not math.isfinite(loss.item()) or loss.item() > limit:
            return False
        with torch.no_grad():
            acc = (net(x_eval).argmax(1) == y_eval).float().mean().item()
        if acc >= cfg.threshold:
            return True
        if step == cfg.steps:
            return False
    return False


def reference_estimate(cfg: EstimateConfig, data: Dataset, device: torch.device) -> dict:
    """η* per seed by sequential scan + log bisection; returns median, per-seed values, runs."""
    factor = 10 ** (1 / cfg.grid_per_decade)
    stars, runs = [], 0
    start = time.perf_counter()
    for seed in range(cfg.seed, cfg.seed + cfg.seeds):
        lo, hi = None, None
        lr = cfg.lr_max
        while lo is None and lr >= cfg.lr_min / cfg.widen * 0.999:  # down until a rate trains
            runs += 1
            if train_one(cfg, data, lr, seed, device):
                lo = lr
            else:
                hi, lr = lr, lr / factor
        lr = cfg.lr_max * factor
        while lo is not None and hi is None and lr <= cfg.lr_max * cfg.widen * 1.001:  # or up
            runs += 1
            if train_one(cfg, data, lr, seed, device):
                lo, lr = lr, lr * factor
            else:
                hi = lr
        if lo is None or hi is None:
            continue  # no η* inside the widened range for this seed
        while hi / lo - 1 > cfg.rtol:
            mid = math.sqrt(lo * hi)
            runs += 1
            if train_one(cfg, data, mid, seed, device):
                lo = mid
            else:
                hi = mid
        stars.append(math.sqrt(lo * hi))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"median": statistics.median(stars) if stars else None, "values": stars, "runs": runs,
            "wall_time": time.perf_counter() - start}
