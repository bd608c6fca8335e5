"""What training costs, in matmul FLOPs: the auto-probe rule, the weighted split's evaluation
cost, and the bound a sweep's dry run shows."""

from __future__ import annotations

import math

from .config import OPTIMIZER_SLOTS, EstimateConfig, weight_layers

# (inputs, classes) of the named data sets, for cost bounds without loading any data.
SHAPES = {"gaussians": (64, 2), "fashion-mnist": (784, 10), "mnist": (784, 10),
          "cifar10": (3072, 10), "mnist1d": (40, 10), "mnist1d-large": (40, 10)}
# A seed's search trains about this many full-budget runs (scan and refinement) at the most.
RUNS_PER_SEED_BOUND = 12


def weight_count(cfg: EstimateConfig, n_in: int, classes: int) -> int:
    """The weights of one member's network (biases aside: they cost no matmul)."""
    return n_in * cfg.width + (weight_layers(cfg) - 2) * cfg.width**2 + cfg.width * classes


def flops_per_member_step(cfg: EstimateConfig, n_in: int, classes: int) -> float:
    """Matmul FLOPs of one SGD step of one member (forward 2, backward 4 per weight, sample)."""
    return 6.0 * cfg.batch_size * weight_count(cfg, n_in, classes)


def probes_per_round(cfg: EstimateConfig, device_type: str, n_in: int, classes: int) -> int:
    """Probes per seed and round: cfg.probes, or when that is 0 (auto) a latency model.

    A probe costs a member's compute in full once the device is busy: on a CPU always, so it
    takes 1 (and the cost-weighted split); on a GPU only once the step's work exceeds about
    cfg.cuda_layer_flops per layer, so small or deep-and-narrow cells take up to 8 probes (fewer
    rounds, each nearly free) and wide ones fall back to 1.
    """
    if cfg.probes:
        return cfg.probes
    if device_type != "cuda":
        return 1
    per_seed = cfg.seeds * flops_per_member_step(cfg, n_in, classes)
    return max(1, min(8, int(_hidden(cfg) * cfg.cuda_layer_flops // per_seed)))


def eval_cost_in_steps(cfg: EstimateConfig, n_train: int, n_eval: int) -> float:
    """One evaluation in training steps: a forward pass over the validation set is a third of a
    step's FLOPs per row."""
    return n_eval / (3 * min(cfg.batch_size, n_train))


def search_bound_tflop(cfg: EstimateConfig) -> float:
    """Rough upper bound in TFLOP of a search over cfg's seeds (every run to the full budget);
    NaN for a model of one's own, whose cost milr does not know ahead."""
    if cfg.model is not None:
        return math.nan
    n_in, classes = SHAPES.get(cfg.dataset, (784, 10))
    return cfg.seeds * RUNS_PER_SEED_BOUND * cfg.steps * flops_per_member_step(
        cfg, n_in, classes) / 1e12


def scan_bound_tflop(cfg: EstimateConfig, rates: int) -> float:
    """What a scan of cfg's seeds at `rates` rates costs in TFLOP at most (every member trains
    the whole budget; a diverged one stops early); NaN for a model of one's own."""
    return search_bound_tflop(cfg) / RUNS_PER_SEED_BOUND * rates


def memory_bytes(cfg: EstimateConfig, n_in: int, classes: int, members: int) -> float:
    """A lower bound on the memory `members` training members need: weights (and the cached
    initial weights of each seed) with the optimizer's state beside them (momentum: one copy,
    Adam: two), activations of a step, and each seed's batch schedule."""
    weights = weight_count(cfg, n_in, classes)
    activations = cfg.batch_size * (n_in + _hidden(cfg) * cfg.width + classes)
    schedule = cfg.seeds * (cfg.steps + 1) * cfg.batch_size * 8
    state = OPTIMIZER_SLOTS[cfg.optimizer] * members * weights
    return (4.0 * ((members + cfg.seeds) * weights + state) + 4.0 * 2 * members * activations
            + schedule)


def _hidden(cfg) -> int:
    """Width-wide activations a step keeps per example, in widths: the input of every layer
    after the first (an MLP's depth, a residual net's depth + 1)."""
    return weight_layers(cfg) - 1


def check_sharpness_memory(cfg, scfg, n_in: int, classes: int, available: float) -> None:
    """Refuse λ1 of a network that cannot fit (`cfg`: a NetworkConfig, `scfg`: a
    SharpnessConfig): at the least, its weights four times (the weights, the gradient, the
    gradient's graph and a product), and the batch's activations three times."""
    activations = scfg.samples * (n_in + _hidden(cfg) * cfg.width + classes)
    need = 4.0 * (4 * weight_count(cfg, n_in, classes) + 3 * activations)
    if need > available:
        raise ValueError(f"λ1 of depth {cfg.depth} x width {cfg.width} on {scfg.samples} "
                         f"samples needs at least {need / 2**30:.3g} GiB; "
                         f"{available / 2**30:.3g} GiB are available")


def check_memory(cfg: EstimateConfig, n_in: int, classes: int, members: int,
                 available: float) -> None:
    """Refuse a cell that cannot fit, with the figures, before anything is allocated."""
    need = memory_bytes(cfg, n_in, classes, members)
    if need > available:
        raise ValueError(f"depth {cfg.depth} x width {cfg.width} with {cfg.seeds} seed(s), "
                         f"{cfg.steps} steps and {members} members in training under "
                         f"{cfg.optimizer} needs at least "
                         f"{need / 2**30:.3g} GiB; {available / 2**30:.3g} GiB are available")
