"""`estimate`: one (depth, width) measured end to end: data on the device, the search, timing."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ..base.config import EstimateConfig, SharpnessConfig
from ..base.cost import check_memory, eval_cost_in_steps, flops_per_member_step, probes_per_round
from ..base.device import (
    available_memory,
    cpu_threads,
    device_name,
    num_threads,
    resolve_device,
    synchronize,
    versions,
)
from ..base.results import Estimate
from ..data.formats import Dataset
from ..data.lookup import identities, load
from .search import Trainer, midpoint_used, search
from .sharpness import plain_and_preconditioned
from .train import BatchedTrainer


def default_trainer(cfg: EstimateConfig, data: Dataset, device: torch.device,
                    full_eval: bool, full_budget: bool = False) -> BatchedTrainer:
    """The engine a config trains on: a model of one's own on the torch.func engine
    (`func.FuncTrainer`, always fully evaluated), the built-in MLPs on the batched one;
    `full_budget`: a scan's (`train.BatchedTrainer`)."""
    if cfg.model is not None:
        from .func import FuncTrainer

        return FuncTrainer(cfg, data, device, full_budget=full_budget)
    return BatchedTrainer(cfg, data, device, full_eval=full_eval, full_budget=full_budget)


def full_eval_by_default(device_type: str) -> bool:
    """Whether evaluations see every example when the caller does not say: on CUDA, where the
    early exit's host-side decisions have not yet been measured to pay, yes."""
    return device_type == "cuda"


def on_device(cfg: EstimateConfig, data: Dataset, device: torch.device,
              members: int) -> Dataset:
    """The data on the device, once `members` members of the built-in MLP are known to fit
    there (a model's memory is not known ahead)."""
    if cfg.model is None:
        check_memory(cfg, data.n_inputs, data.classes, members, available_memory(device))
    return data.to(device)


def training_threads(cfg: EstimateConfig, device: torch.device, data: Dataset,
                     members: int, trainer: Trainer | None = None) -> int:
    """torch's threads for training `members` together: on the CPU no more than their steps can
    feed and other processes leave free (`cpu_threads`: small steps cannot feed several threads,
    and a thread waiting for a busy core stalls the others), the step's FLOPs as the trainer
    counts them (a model's measured, `func.footprint`). A trainer of another kind keeps torch's
    count for a model, whose cost it does not say."""
    threads = torch.get_num_threads()
    if device.type != "cpu":
        return threads
    if isinstance(trainer, BatchedTrainer):
        return cpu_threads(trainer.step_flops(members), threads)
    if cfg.model is None:
        return cpu_threads(members * flops_per_member_step(cfg, data.n_inputs, data.classes),
                           threads)
    return threads


def estimate(cfg: EstimateConfig, data: Dataset | None = None,
             on_round: Callable[[int, int, int], None] | None = None,
             trainer: Trainer | None = None, lambda1_samples: int = 0,
             full_eval: bool | None = None) -> Estimate:
    """η* of one (depth, width) for cfg.seeds seeds: the library entry point of `milr estimate`.

    `trainer` (the benchmarks' seam, see `search.Trainer`): what trains the members; by
    default the batched engine. `lambda1_samples` > 0
    also measures λ1 at initialisation of every seed on that many examples (for c = η*·λ1), and
    the preconditioned λ1 beside it (`sharpness.plain_and_preconditioned`: the one λ1 path of
    `estimate` and a sweep's tasks). `full_eval`: every evaluation sees the whole validation
    set, so the trials record full accuracies (`train.BatchedTrainer`); False: an evaluation
    stops once its verdict is certain; None (default): full on CUDA, where the early exit has
    not yet been measured to pay (benchmarks/README.md), early exit elsewhere. It configures the
    default trainer only: with a `trainer`, True is refused, since that trainer evaluates as it
    was built.
    """
    if not isinstance(lambda1_samples, int) or lambda1_samples < 0:
        raise ValueError(f"lambda1_samples must be a non-negative integer (0: off), got "
                         f"{lambda1_samples!r}")
    if trainer is not None and full_eval:
        raise ValueError(f"full_eval=True applies to the default trainer only, not to the "
                         f"trainer given ({type(trainer).__name__}): build that one with "
                         f"full evaluations instead")
    device = resolve_device(cfg.device)
    if full_eval is None:
        full_eval = full_eval_by_default(device.type) and trainer is None
    data = data or load(cfg.dataset, cfg.data_dir)
    code = identities(cfg, data)  # the user code and data behind it, before the code runs
    builtin = cfg.model is None  # the MLP's cost model: a model's cost is not known ahead
    probes = probes_per_round(cfg, device.type, data.n_inputs, data.classes) if builtin \
        else cfg.probes or 1
    data = on_device(cfg, data, device, cfg.seeds * probes)
    start = time.perf_counter()
    eval_cost = eval_cost_in_steps(cfg, len(data.x_train), len(data.x_eval))
    # No member is cancelled: the decision path may need the verdict of a rate below a
    # speculative success, and an edge probe's is reported whatever larger ones did.
    trainer = trainer or default_trainer(cfg, data, device, full_eval)
    with num_threads(training_threads(cfg, device, data, cfg.seeds * probes, trainer)):
        seeds, trials, rounds = search(cfg, trainer, probes, on_round, eval_cost,
                                       pipeline=device.type == "cuda")
        synchronize(device)
        name = device_name(device)  # with the threads that trained
    wall_time = time.perf_counter() - start
    pairs = []
    if lambda1_samples:
        pairs = plain_and_preconditioned(cfg.network, SharpnessConfig(samples=lambda1_samples),
                                         data)
    return Estimate(
        config=cfg,
        seeds=seeds,
        trials=trials,
        rounds=rounds,
        probes=probes,
        midpoint_used=midpoint_used(cfg.midpoint, probes),
        wall_time=wall_time,
        member_steps=sum(t.steps for t in trials),
        device=name,
        versions=versions(),
        lambda1={p.seed: p.lambda1 for p, _ in pairs} if lambda1_samples else None,
        sharpness=pairs,
        code=code,
    )
