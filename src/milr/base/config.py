"""The configurations of milr's measurements, validated on creation: the one source of defaults.

Every field of `EstimateConfig` is recorded in every result row, so a row says exactly how its η*
was obtained; the CLI builds its options and help from these fields (`help_for`, `defaults`).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields, make_dataclass
from types import SimpleNamespace

from .spec import SPEC_FIELDS, is_spec, sha256_column  # noqa: F401 - SPEC_FIELDS re-exported

# Data sets known by name (milr.data loads them); any other `dataset` must be a .npz path or
# a user's function, PATH.py:NAME or package.module:NAME (README: Data).
DATASETS = ("gaussians", "fashion-mnist", "mnist", "cifar10", "mnist1d", "mnist1d-large")
# Thresholds on validation accuracy. MNIST and CIFAR-10 are the paper's; the others are ours,
# chosen so that a good learning rate meets them well inside the default budget (docs/protocol.md).
DEFAULT_THRESHOLDS = {"mnist": 0.925, "cifar10": 0.34, "fashion-mnist": 0.80, "gaussians": 0.80,
                      "mnist1d": 0.40, "mnist1d-large": 0.40}
# The best accuracy any classifier reaches in expectation, where milr knows it: the Gaussians'
# Bayes accuracy Φ(δ/2) with δ = data.GAUSS_DELTA = 2.0 (a threshold above it can never be met).
ACCURACY_CEILINGS = {"gaussians": 0.5 * (1 + math.erf(1 / math.sqrt(2)))}
MIDPOINTS = ("weighted", "geometric", "arithmetic")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "tf32")
SOLVERS = ("lanczos", "arpack")
LOSSES = ("ce", "mse")
CRITERIA = ("accuracy", "stable")
DIVERGENCE_CHECKS = ("auto", "eval", "step")
OUTPUT_INITS = ("fan-in", "he", "zero")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
# Per-member state tensors of the size of the weights each optimizer keeps (the memory check).
OPTIMIZER_SLOTS = {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2, "adamw": 2}
# Default search bracket (lr_min, lr_max) per optimizer: Adam's η* lies decades below SGD's and
# momentum β multiplies the step by about 1 / (1 - β), so SGD's bracket would put the floor of a
# small-rate optimizer too high (a seed would end below_range because of it) and waste the scan.
LR_RANGES = {"sgd": (1e-3, 10.0), "momentum": (1e-4, 1.0), "nesterov": (1e-4, 1.0),
             "adam": (1e-5, 0.1), "adamw": (1e-5, 0.1)}
# The hyper-parameters an optimizer uses, with their defaults (torch.optim's); the others must
# stay unset (None) under it.
OPTIMIZER_PARAMS = {"momentum": {"momentum": 0.9}, "nesterov": {"momentum": 0.9},
                    "adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
                    "adamw": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}}
PARAMETRIZATIONS = ("sp", "ntk", "mup")
ARCHITECTURES = ("mlp", "residual")
ACTIVATIONS = ("relu", "tanh", "linear", "abs")
# The residual branches' forward multiplier α as a function of the number of blocks L.
BRANCH_SCALES = {"none": lambda n: 1.0, "sqrt-depth": lambda n: 1 / math.sqrt(n),
                 "depth": lambda n: 1 / n}
# An rtol finer than this resolves nothing a run's own noise does not swamp; coarser than 1 is
# not a bracket at all.
RTOL_RANGE = (1e-4, 1.0)
MAX_SEEDS = 10_000  # far beyond any spread worth measuring; a typo such as 1e8 fails at once
# Probes per seed and round: 8 times what auto gives a GPU, and far below the hundreds of scan
# points at which lr_max / 10^(i / grid_per_decade) leaves the range of floats.
MAX_PROBES = 64
AGGREGATES = ("median", "mean")
# Training computes in float32: a float option, and each rate or limit made of them, must be 0
# or lie within float32's normal range, or it would crash the run (a scalar beyond it) or
# silently become inf or 0 (a tensor value).
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32
# The largest loss of all-zero outputs (the divergence rule's floor multiplies it): log C
# under ce, C at most data.formats.MAX_CLASSES = 10^4, so below 10; 1/(2C) under mse.
MAX_ZERO_LOSS = 10.0


def opt(default, help: str, flags: tuple[str, ...] = ()):  # noqa: A002 - the CLI's word
    """A config field with its help text (and the CLI's option names, if not only its own),
    read by the CLI (one place for both)."""
    return field(default=default, metadata={"help": help, "flags": flags})


@dataclass(frozen=True)
class EstimateConfig:
    depth: int = opt(MISSING, "Number of hidden layers.")
    width: int = opt(MISSING, "Units per hidden layer.")
    dataset: str = opt("gaussians", "gaussians, fashion-mnist, mnist, cifar10, mnist1d, "
                                    "mnist1d-large, a .npz path, or PATH.py:NAME (or "
                                    "package.module:NAME): a function NAME() returning "
                                    "(x_train, y_train, x_eval, y_eval).",
                       flags=("--dataset", "--data"))
    data_dir: str | None = opt(None, "Directory holding the data files.")
    model: str | None = opt(None, "Any PyTorch model instead of the built-in MLP: PATH.py:NAME "
                                  "or package.module:NAME, a function NAME(depth, width, "
                                  "in_shape, classes) returning an nn.Module, built per seed "
                                  "with its own initialisation and trained at one uniform rate "
                                  "(the MLP's init, parametrisation, per-layer rate and "
                                  "architecture options are refused with it; "
                                  "docs/protocol.md).")
    loss: str = opt("ce", "Training loss: ce (mean cross-entropy) or mse (1/2 x the mean over "
                          "batch and classes of the squared error to one-hot targets).")
    criterion: str = opt("accuracy", "What counts as trained: accuracy (validation accuracy >= "
                                     "threshold at an evaluation) or stable (the whole budget "
                                     "with the loss finite and never above divergence_factor x "
                                     "its initial value; no threshold).")
    threshold: float | None = opt(None, "Validation accuracy that counts as trained "
                                        "[default: per dataset; none under stable].")
    steps: int = opt(1000, "Step budget per run.")
    also_steps: int = opt(0, "Also report each seed's η* at this smaller budget, found from "
                             "the same runs (a run's verdict at any smaller budget follows "
                             "from where it stopped), refined to rtol with more runs if "
                             "needed; a multiple of eval_every below steps (0: off).")
    batch_size: int = opt(128, "Minibatch size.")
    eval_every: int = opt(50, "Steps between validation checks (a run stops at its first "
                              "success).")
    input_lr_scale: float | None = opt(None, "Input-layer lr = lr * this (the paper's "
                                             "condition (ii)) [default: 0.1; 1 with model, "
                                             "which trains every tensor at lr].")
    architecture: str = opt("mlp", "mlp (depth hidden layers) or residual (an input layer, "
                                   "depth residual blocks h + α·(W·φ(h) + b), an output "
                                   "layer; docs/protocol.md).")
    activation: str = opt("relu", "Hidden activation φ: relu, tanh, linear or abs (hidden "
                                  "weights' gain: torch's calculate_gain, √2 for abs).")
    branch_scale: str = opt("none", "Residual branches' multiplier α: none (1), sqrt-depth "
                                    "(1/√depth) or depth (1/depth); none under mlp.")
    block_lr_depth_exponent: float = opt(0.0, "Residual blocks' lr (weights and biases) = lr "
                                              "* depth^this; 0 under mlp.")
    output_init: str = opt("fan-in", "Output-layer weight variance: fan-in (1/fan_in), he "
                                     "(2/fan_in) or zero.")
    output_lr_scale: float = opt(1.0, "Output-layer lr (weights and bias) = lr * this.")
    optimizer: str = opt("sgd", "sgd, momentum (heavy ball), nesterov, adam or adamw, each with "
                                "torch.optim's semantics.")
    momentum: float | None = opt(None, "Momentum of optimizer momentum and nesterov (dampening "
                                       "0; the buffer starts at the first gradient) [default: "
                                       "0.9 there; unset for the others].")
    beta1: float | None = opt(None, "Adam's β1 [default: 0.9 under adam and adamw; unset for "
                                    "the others].")
    beta2: float | None = opt(None, "Adam's β2 [default: 0.999 under adam and adamw; unset for "
                                    "the others].")
    eps: float | None = opt(None, "Adam's ε, added to the bias-corrected √v [default: 1e-8 "
                                  "under adam and adamw; unset for the others].")
    weight_decay: float = opt(0.0, "Weight decay: λ·w added to the gradient (sgd, momentum, "
                                   "nesterov, adam; L2) or w ← w·(1 − lr·λ) before the step "
                                   "(adamw; decoupled).")
    warmup_steps: int = opt(0, "Linear warm-up: the rate at step t = 1, 2, ... is lr · min(1, "
                               "t / this), so η* is the peak rate (0: constant).")
    parametrization: str = opt("sp", "sp (standard), ntk (weights N(0, 1), each layer's output "
                                     "× gain/√fan_in) or mup (μP relative to base_width, the "
                                     "rules of Microsoft's mup package; docs/protocol.md).")
    base_width: int | None = opt(None, "Width at which mup equals sp (required by mup, unset "
                                       "otherwise).")
    divergence_factor: float = opt(10.0, "A loss above this times the initial loss counts as "
                                         "divergence, checked where divergence_check says.")
    divergence_check: str = opt("auto", "Where the factor rule applies: eval (at evaluations "
                                        "only: a spike that has recovered is tolerated) or step "
                                        "(every step); auto: eval under accuracy, step under "
                                        "stable.")
    initial_loss_floor: float = opt(1.0, "The initial loss of the divergence rule is taken as "
                                         "at least this times the loss of all-zero outputs "
                                         "(log C under ce, 1/(2C) under mse).")
    nonfinite_every: int = opt(10, "Steps between checks for a non-finite loss, counted from "
                                   "the last check or evaluation: a run whose loss overflowed "
                                   "stops within this many steps.")
    seeds: int = opt(5, "Number of seeds (seed, seed + 1, ...).")
    seed: int = opt(0, "First seed.")
    lr_min: float | None = opt(None, "Bottom of the search bracket (widened by --widen if "
                                     "needed) [default: per optimizer: 1e-3 sgd, 1e-4 momentum "
                                     "and nesterov, 1e-5 adam and adamw].")
    lr_max: float | None = opt(None, "Top of the search bracket (widened by --widen if needed) "
                                     "[default: per optimizer: 10 sgd, 1 momentum and nesterov, "
                                     "0.1 adam and adamw].")
    lr_start: float | None = opt(None, "Where the scan starts (the nearest point of its grid); "
                                       "none: lr_max. A warm-started sweep predicts it from "
                                       "the cells done.")
    widen: float = opt(100.0, "How far the bracket may be widened on either side.")
    grid_per_decade: int = opt(3, "Points per decade of the coarse scan that finds a rate that "
                                  "trains.")
    rtol: float = opt(0.05, "Stop when the bracket [lo, hi] has hi / lo - 1 <= rtol.")
    max_rounds: int = opt(64, "Trials on a seed's decision path (the rounds of the one-probe "
                              "search) before it is reported unfinished.")
    probes: int = opt(0, "Learning rates per seed and round (0: auto, 1 on CPU, up to 8 on "
                         "CUDA).")
    midpoint: str = opt("weighted", "Where a bracket is split: weighted (least expected cost, "
                                    "one probe per round), geometric or arithmetic.")
    edge_probes: int = opt(4, "After the bracket converges, try this many rates over (hi, "
                              "edge_factor · hi] and report how many train (0: none).")
    edge_factor: float = opt(1.25, "How far above hi (and below lo) the edge probes reach.")
    edge_below: bool = opt(False, "Also try edge_probes rates over [lo / edge_factor, lo) and "
                                  "report how many fail (the band below η*; successes cost a "
                                  "run each).")
    cuda_layer_flops: float = opt(5e9, "Auto probes on CUDA: matmul FLOPs a layer of a step "
                                       "costs however little it holds.")
    device: str = opt("auto", "auto, cpu or cuda.")
    precision: str = opt("fp32", "fp32, or tf32 for CUDA matmuls.")

    def __post_init__(self) -> None:
        _check_network(self)
        _positive_int(self, "steps", "batch_size", "eval_every", "grid_per_decade",
                      "nonfinite_every", "max_rounds")
        if not isinstance(self.probes, int) or self.probes < 0:
            raise ValueError(f"probes must be 0 (auto) or a positive integer, got {self.probes!r}")
        if not isinstance(self.edge_probes, int) or isinstance(self.edge_probes, bool) \
                or not 0 <= self.edge_probes <= MAX_PROBES:
            raise ValueError(f"edge_probes must be an integer in [0, {MAX_PROBES}], got "
                             f"{self.edge_probes!r}")
        if not isinstance(self.edge_below, bool):
            raise ValueError(f"edge_below must be true or false, got {self.edge_below!r}")
        if not (_finite(self.edge_factor) and 1 < self.edge_factor <= 10):
            raise ValueError(f"edge_factor must lie in (1, 10], got {self.edge_factor!r}")
        if self.probes > MAX_PROBES:
            raise ValueError(f"probes must be at most {MAX_PROBES}, got {self.probes}")
        _choice(self, "criterion", CRITERIA)
        _choice(self, "divergence_check", DIVERGENCE_CHECKS)
        if self.divergence_check == "auto":
            object.__setattr__(self, "divergence_check",
                               "step" if self.criterion == "stable" else "eval")
        if self.criterion == "stable":
            if self.divergence_check != "step":
                raise ValueError("criterion stable checks the loss at every step: "
                                 "divergence_check must be step (or auto)")
            if self.threshold is not None:
                raise ValueError(f"criterion stable has no threshold, got {self.threshold!r}")
        elif self.threshold is None:
            if self.dataset not in DEFAULT_THRESHOLDS:
                raise ValueError(f"dataset {self.dataset!r} has no default threshold: "
                                 "pass threshold explicitly")
            object.__setattr__(self, "threshold", DEFAULT_THRESHOLDS[self.dataset])
        if self.criterion == "accuracy" and not (_finite(self.threshold)
                                                 and 0 < self.threshold < 1):
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold!r}")
        ceiling = ACCURACY_CEILINGS.get(self.dataset)
        if self.criterion == "accuracy" and ceiling is not None and self.threshold > ceiling:
            raise ValueError(f"threshold {self.threshold!r} is above what {self.dataset} allows: "
                             f"its Bayes accuracy is {ceiling:.3f}, so no learning rate or "
                             "budget can reach it")
        self._check_optimizer()
        _positive_float(self, "lr_min", "lr_max", "rtol", "initial_loss_floor",
                        "cuda_layer_flops")
        if self.criterion == "accuracy" and self.eval_every > self.steps:
            raise ValueError(f"eval_every ({self.eval_every}) must not exceed steps "
                             f"({self.steps}): no run would ever be evaluated")
        if not isinstance(self.also_steps, int) or isinstance(self.also_steps, bool) \
                or not 0 <= self.also_steps < self.steps \
                or self.also_steps % self.eval_every:
            raise ValueError(f"also_steps must be 0 (off) or a multiple of eval_every "
                             f"({self.eval_every}) below steps ({self.steps}), got "
                             f"{self.also_steps!r}")
        if not RTOL_RANGE[0] <= self.rtol <= RTOL_RANGE[1]:
            raise ValueError(f"rtol must lie in [{RTOL_RANGE[0]:g}, {RTOL_RANGE[1]:g}], "
                             f"got {self.rtol!r}")
        if self.lr_start is not None and not (_finite(self.lr_start) and self.lr_start > 0):
            raise ValueError(f"lr_start must be a positive number, got {self.lr_start!r}")
        if not self.lr_min < self.lr_max:
            raise ValueError(f"lr_min must be below lr_max, got {self.lr_min} >= {self.lr_max}")
        if not (_finite(self.widen) and self.widen >= 1):
            raise ValueError(f"widen must be >= 1, got {self.widen!r}")
        if not (_finite(self.divergence_factor) and self.divergence_factor > 1):
            raise ValueError(f"divergence_factor must be > 1, got {self.divergence_factor!r}")
        _floats(self)
        _check_float32_products(self)
        _choice(self, "midpoint", MIDPOINTS)
        _choice(self, "precision", PRECISIONS)

    def _check_optimizer(self) -> None:
        """The optimizer's hyper-parameters (torch.optim's defaults where unset; those it does
        not use must stay unset), warm-up, and the search bracket's defaults for it."""
        used = OPTIMIZER_PARAMS.get(self.optimizer, {})
        for name in ("momentum", "beta1", "beta2", "eps"):
            v = getattr(self, name)
            if v is not None and not _finite(v):
                raise ValueError(f"{name} must be a number, got {v!r}")
            if name == "momentum" and v is not None and not 0 < v < 1:
                raise ValueError(f"momentum must lie in (0, 1), got {v!r} (0 is optimizer sgd)")
            if name in ("beta1", "beta2") and v is not None and not 0 <= v < 1:
                raise ValueError(f"{name} must lie in [0, 1), got {v!r}")
            if name == "eps" and v is not None and not v > 0:
                raise ValueError(f"eps must be a positive number, got {v!r}")
            if v is not None and name not in used:
                users = [o for o in OPTIMIZERS if name in OPTIMIZER_PARAMS.get(o, {})]
                raise ValueError(f"{name} applies to optimizer {' and '.join(users)} only, "
                                 f"not {self.optimizer}: leave it unset")
            if v is None and name in used:
                object.__setattr__(self, name, used[name])
        if not (_finite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a non-negative number, got "
                             f"{self.weight_decay!r}")
        w = self.warmup_steps
        if not isinstance(w, int) or isinstance(w, bool) or w < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {w!r}")
        if w > self.steps:
            raise ValueError(f"warmup_steps ({w}) must not exceed steps ({self.steps}): the "
                             "peak rate would never be reached")
        if self.also_steps and w > self.also_steps:
            raise ValueError(f"warmup_steps ({w}) must not exceed also_steps "
                             f"({self.also_steps}): at the shorter budget the peak rate would "
                             "never be reached")
        lo, hi = LR_RANGES[self.optimizer]
        if self.lr_min is None:
            object.__setattr__(self, "lr_min", lo)
        if self.lr_max is None:
            object.__setattr__(self, "lr_max", hi)

    def row(self) -> dict:
        """The config as a flat record (one CSV column per field)."""
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @property
    def network(self) -> NetworkConfig:
        """The part of this config that λ1 at initialisation depends on (`milr sharpness`)."""
        return NetworkConfig(**{name: getattr(self, name) for name in NETWORK_FIELDS})


# The fields of EstimateConfig that λ1 at initialisation depends on, and where it is measured:
# the network (shape, initialisation, parametrisation), its loss, the per-layer rate multiples
# that precondition λ1 (with the optimizer, whose rule sets them under mup), the data set, the
# seeds and the device.
NETWORK_FIELDS = ("depth", "width", "model", "architecture", "activation", "branch_scale",
                  "block_lr_depth_exponent", "dataset", "data_dir", "loss", "input_lr_scale",
                  "output_init", "output_lr_scale", "optimizer", "parametrization", "base_width",
                  "seeds", "seed", "device")


def _network_post_init(self) -> None:
    _check_network(self)
    _floats(self)


# EstimateConfig's fields of NETWORK_FIELDS, with their defaults, help and checks (one source).
NetworkConfig = make_dataclass(
    "NetworkConfig",
    [(f.name, f.type, field(default=f.default, metadata=f.metadata))
     for name in NETWORK_FIELDS for f in fields(EstimateConfig) if f.name == name],
    frozen=True,
    namespace={"__doc__": "The network λ1 is taken of, on which data, seeds and device.",
               "__post_init__": _network_post_init,
               "row": EstimateConfig.row, "__module__": __name__})
# Config fields that may differ between rows of one results file: the cell, which seeds,
# max_rounds (a limit on the search, not part of its estimand: raising it reruns unfinished seeds)
# and lr_start (where the scan starts, predicted per cell by a warm-started sweep).
# How a search runs, not what it measures (η* is the one-probe search's on any device and probe
# count): never blocks a resume or a fit, recorded per row.
EXECUTION_FIELDS = ("probes", "cuda_layer_flops", "device", "precision", "data_dir",
                    "edge_probes", "edge_factor", "edge_below")
FREE_FIELDS = ("depth", "width", "seed", "seeds", "max_rounds", "lr_start", *EXECUTION_FIELDS)
FIXED_FIELDS = tuple(f.name for f in fields(EstimateConfig) if f.name not in FREE_FIELDS)


def _check_network(cfg) -> None:
    """The checks of NETWORK_FIELDS (EstimateConfig and NetworkConfig alike)."""
    _positive_int(cfg, "depth", "width", "seeds")
    _check_model(cfg)
    if cfg.seeds > MAX_SEEDS:
        raise ValueError(f"seeds must be at most {MAX_SEEDS}, got {cfg.seeds}")
    if not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {cfg.seed!r}")
    if cfg.dataset not in DATASETS and not str(cfg.dataset).endswith(".npz") \
            and not is_spec(cfg.dataset):
        raise ValueError(f"unknown dataset {cfg.dataset!r}: expected one of "
                         f"{', '.join(DATASETS)}, a path to a .npz file or PATH.py:NAME")
    _choice(cfg, "loss", LOSSES)
    _choice(cfg, "output_init", OUTPUT_INITS)
    _choice(cfg, "optimizer", OPTIMIZERS)
    _choice(cfg, "parametrization", PARAMETRIZATIONS)
    _check_architecture(cfg)
    b = cfg.base_width
    if b is not None and (not isinstance(b, int) or isinstance(b, bool) or b < 1):
        raise ValueError(f"base_width must be a positive integer, got {b!r}")
    if cfg.parametrization == "mup" and b is None:
        raise ValueError("parametrization mup needs base_width (the width at which it "
                         "equals sp)")
    if cfg.parametrization != "mup" and b is not None:
        raise ValueError(f"base_width applies to parametrization mup only, not "
                         f"{cfg.parametrization}: leave it unset")
    if cfg.parametrization == "ntk" and cfg.output_init == "zero":
        raise ValueError("parametrization ntk multiplies the output layer by its gain, 0 "
                         "under output_init zero: the network could never train")
    _positive_float(cfg, "input_lr_scale", "output_lr_scale")
    if cfg.data_dir is not None and not isinstance(cfg.data_dir, str):
        raise ValueError(f"data_dir must be a path, got {cfg.data_dir!r}")
    _choice(cfg, "device", DEVICES)


# The built-in network's options that a model of one's own cannot honour (milr does not know
# its layers): each must keep its default with `model`.
MLP_ONLY = {"output_init": "fan-in", "parametrization": "sp", "output_lr_scale": 1.0,
            "architecture": "mlp", "activation": "relu", "branch_scale": "none",
            "block_lr_depth_exponent": 0.0}
INPUT_LR_SCALE = 0.1  # the built-in MLP's default (the paper's condition (ii))
# The fields whose values follow from another's (its defaults, or what it requires): where that
# one differs on purpose (`milr plot scan --compare-by`), these may differ with it. A dataset
# brings its code's hash and its default threshold; a model its hash and the MLP's own options
# (their defaults, input_lr_scale 1 rather than 0.1, against an MLP set otherwise).
TIED_FIELDS = {"optimizer": (*dict.fromkeys(p for ps in OPTIMIZER_PARAMS.values() for p in ps),
                             "lr_min", "lr_max"),
               "parametrization": ("base_width",),
               "dataset": (sha256_column("dataset"), "data_dir", "threshold"),
               "model": (sha256_column("model"), "input_lr_scale", *MLP_ONLY, "base_width")}


def _check_model(cfg) -> None:
    """model is a spec or None; with it, the MLP's options keep their defaults and the input
    layer trains at the uniform rate (input_lr_scale 1); without it, input_lr_scale's default
    is the paper's 0.1."""
    if cfg.model is None:
        if cfg.input_lr_scale is None:
            object.__setattr__(cfg, "input_lr_scale", INPUT_LR_SCALE)
        return
    if not is_spec(cfg.model):
        raise ValueError(f"model {cfg.model!r} must be PATH.py:NAME or package.module:NAME")
    for name, default in MLP_ONLY.items():
        if getattr(cfg, name) != default:
            raise ValueError(f"{name} {getattr(cfg, name)!r} applies to the built-in MLP, not "
                             f"to model {cfg.model!r} (its own initialisation and one uniform "
                             f"rate are used): leave {name} at {default!r}")
    if cfg.input_lr_scale not in (None, 1.0):
        raise ValueError(f"input_lr_scale {cfg.input_lr_scale!r} applies to the built-in MLP, "
                         f"not to model {cfg.model!r}, whose every tensor trains at lr: leave "
                         "it unset")
    object.__setattr__(cfg, "input_lr_scale", 1.0)


def _check_architecture(cfg) -> None:
    """Architecture, activation and the residual-only options (refused on an MLP)."""
    _choice(cfg, "architecture", ARCHITECTURES)
    _choice(cfg, "activation", ACTIVATIONS)
    _choice(cfg, "branch_scale", tuple(BRANCH_SCALES))
    e = cfg.block_lr_depth_exponent
    if not _finite(e) or abs(e) > 10:
        raise ValueError(f"block_lr_depth_exponent must be a number in [-10, 10], got {e!r}")
    if cfg.architecture == "mlp" and cfg.branch_scale != "none":
        raise ValueError(f"branch_scale applies to architecture residual only, got "
                         f"{cfg.branch_scale!r} with mlp: leave it none")
    if cfg.architecture == "mlp" and e != 0:
        raise ValueError(f"block_lr_depth_exponent applies to architecture residual only, got "
                         f"{e!r} with mlp: leave it 0")


def weight_layers(cfg) -> int:
    """Weight matrices of cfg's network: depth hidden layers and the output layer (mlp), or
    the input layer, depth blocks and the output layer (residual)."""
    return cfg.depth + (2 if cfg.architecture == "residual" else 1)


def _floats(cfg) -> None:
    """10 and 10.0 are the same setting: store floats as floats; each one float32 holds."""
    for f in fields(cfg):
        if f.type in ("float", "float | None") and _finite(getattr(cfg, f.name)):
            _float32(f.name, getattr(cfg, f.name))
            object.__setattr__(cfg, f.name, float(getattr(cfg, f.name)))


def _float32(what: str, v: float, role: str = "") -> None:
    """Refuse a value float32 would turn into inf or 0 (or that crashes torch as a scalar)."""
    if v and not FLOAT32_TINY <= abs(v) <= FLOAT32_MAX:
        raise ValueError(f"{what} = {v:g}{role} is outside the range milr accepts, float32's "
                         f"({FLOAT32_TINY:.3g} to {FLOAT32_MAX:.3g}; 0 aside)")


def _mup_factor(cfg) -> float:
    """The largest factor μP puts on a tensor's rate or weight decay: m = width / base_width,
    or 1/m (docs/protocol.md §2); 1 in the other parametrisations."""
    m = cfg.width / cfg.base_width if cfg.parametrization == "mup" else 1.0
    return max(m, 1 / m)


def _lr_scales(cfg) -> tuple[float, ...]:
    """The multiples of the base rate a user sets per layer: input_lr_scale, output_lr_scale,
    the blocks' depth^block_lr_depth_exponent and 1 (μP's factor comes on top)."""
    return (cfg.input_lr_scale, cfg.output_lr_scale, 1.0,
            float(cfg.depth) ** cfg.block_lr_depth_exponent)


def _check_float32_products(cfg: EstimateConfig) -> None:
    """The rates the search may try (lr_min / widen to lr_max × widen, times each layer's
    multiple: input_lr_scale, output_lr_scale, the blocks' depth^block_lr_depth_exponent or 1,
    and μP's), each tensor's weight decay and the divergence limit are float32 numbers too."""
    mup, scales = _mup_factor(cfg), _lr_scales(cfg)
    _float32("lr_min / widen × min(input_lr_scale, output_lr_scale, 1, depth^"
             "block_lr_depth_exponent) / μP's factor "
             f"({cfg.lr_min:g} / {cfg.widen:g} × {min(scales):g} / {mup:g})",
             cfg.lr_min / cfg.widen * min(scales) / mup, ", the smallest rate tried,")
    _float32("lr_max × widen × max(input_lr_scale, output_lr_scale, 1, depth^"
             "block_lr_depth_exponent) × μP's factor "
             f"({cfg.lr_max:g} × {cfg.widen:g} × {max(scales):g} × {mup:g})",
             cfg.lr_max * cfg.widen * max(scales) * mup, ", the largest rate tried,")
    for factor in (1 / mup, mup):
        _float32(f"weight_decay × μP's factor ({cfg.weight_decay:g} × {factor:g})",
                 cfg.weight_decay * factor)
    _float32("divergence_factor × initial_loss_floor × the largest loss of all-zero outputs "
             f"({cfg.divergence_factor:g} × {cfg.initial_loss_floor:g} × {MAX_ZERO_LOSS:g})",
             cfg.divergence_factor * cfg.initial_loss_floor * MAX_ZERO_LOSS)


# What a scan's optimum minimises (docs/protocol.md §11): a loss, or accuracy maximised.
OBJECTIVES = ("val-loss", "train-loss", "val-accuracy")
# The search's options that a scan, which trains a fixed grid for the whole budget, has no use
# for: a scan refuses any of them set away from its default (`check_scan`).
SEARCH_ONLY_FIELDS = ("rtol", "probes", "midpoint", "edge_probes", "edge_factor", "edge_below",
                      "lr_start", "max_rounds", "grid_per_decade", "widen", "also_steps")


@dataclass(frozen=True)
class ScanConfig:
    """What a scan (`milr scan`) adds to an EstimateConfig: its grid and its objective."""

    points_per_octave: int = opt(4, "Rates per doubling of the scan's log grid from lr_min "
                                    "up to lr_max (at least 3 rates in all).")
    objective: str = opt("val-loss", "What the optimum η_opt is best at, over seeds' medians: "
                                      "val-loss or train-loss (lowest) or val-accuracy "
                                      "(highest); a diverged run is the worst.")

    def __post_init__(self) -> None:
        _positive_int(self, "points_per_octave")
        _choice(self, "objective", OBJECTIVES)


# What a sweep's grid measures per cell (its `measure` key): the search's η* per seed, or one
# scan of all its seeds; and the keys a scan grid adds, ScanConfig's.
MEASURES = ("search", "scan")
SCAN_FIELDS = tuple(f.name for f in fields(ScanConfig))
# A scan's grid: where it looks for η_opt, not what it measures (an `ok` η_opt lies inside any
# grid that resolves it), so `milr plot scan`, which draws against rate, takes scans of
# different grids. `milr fit` takes different ranges only: the resolution moves what is read
# off the grid (the stability edge, a grid rate, is low by up to one step).
SCAN_RANGE_FIELDS = ("lr_min", "lr_max")
SCAN_GRID_FIELDS = (*SCAN_RANGE_FIELDS, "points_per_octave")


def check_scan(cfg: EstimateConfig) -> None:
    """Refuse a search-only option set away from its default: a scan would ignore it."""
    for f in fields(cfg):
        if f.name in SEARCH_ONLY_FIELDS and getattr(cfg, f.name) != f.default:
            raise ValueError(f"{f.name} = {getattr(cfg, f.name)!r} is an option of the search "
                             "(milr estimate); a scan trains its whole grid and does not use "
                             "it: leave it at its default")


@dataclass(frozen=True)
class SharpnessConfig:
    """How λ1 at initialisation is computed (the network and data: a NetworkConfig)."""

    samples: int = opt(1024, "Training examples in the fixed batch.")
    preconditioned: bool = opt(False, "λ1 of S^½HS^½, S = each tensor's lr scale (input_lr_scale, "
                                      "output_lr_scale and the parametrisation's per-layer "
                                      "rates, which under mup are MuSGD's or MuAdam's as "
                                      "--optimizer says): what SGD sees.")
    tol: float = opt(1e-3, "Relative residual that counts as converged.")
    max_hvps: int = opt(100, "Hessian-vector products per seed: at most this many under "
                             "arpack; lanczos runs this many iterations at most, then one "
                             "product more for the residual.")
    solver: str = opt("lanczos", "lanczos (torch, on the model's device) or arpack (scipy).")

    def __post_init__(self) -> None:
        _positive_int(self, "samples", "max_hvps")
        if not (_finite(self.tol) and 0 < self.tol < 1):
            raise ValueError(f"tol must lie in (0, 1), got {self.tol!r}")
        _choice(self, "solver", SOLVERS)


# --- milr coord-check: a few steps at one rate over widths (or depths) ----------------------

# EstimateConfig's fields that a coordinate check's runs depend on (the search's are not used).
COORD_FIELDS = ("dataset", "data_dir", "loss", "batch_size", "architecture", "activation",
                "branch_scale", "block_lr_depth_exponent", "input_lr_scale", "output_init",
                "output_lr_scale", "optimizer", "momentum", "beta1", "beta2", "eps",
                "weight_decay", "warmup_steps", "parametrization", "base_width", "seeds", "seed",
                "device", "precision")
# The rate of a coordinate check where none is given, per optimizer: well inside what trains.
COORD_LRS = {"sgd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adam": 1e-3, "adamw": 1e-3}
COORD_WIDTHS = "32,64,128,256"
MAX_COORD_SIZES = 64  # far more than a check needs; a typo such as 1-1000 fails at once


@dataclass(frozen=True)
class _CoordOwn:
    widths: str | None = opt(None, f"Widths compared, comma-separated, at least 2 [default: "
                                   f"{COORD_WIDTHS} unless --depths].")
    depths: str | None = opt(None, "Compare these depths instead, comma-separated, at least 2 "
                                   "(architecture residual only; the width is --width).")
    depth: int = opt(2, "Hidden layers (mlp) or blocks (residual) at every width.")
    width: int = opt(128, "Units per layer at every depth (with --depths).")
    lr: float | None = opt(None, "Learning rate of every run [default: per optimizer: 0.1 sgd, "
                                 "0.01 momentum and nesterov, 1e-3 adam and adamw].")
    steps: int = opt(4, "Training steps: sizes are recorded at t = 0 (initialisation) ... "
                        "steps.")


def _sizes(cfg, name: str) -> tuple[int, ...]:
    """The widths or depths of a coordinate check, from "32,64" (or a sequence of integers),
    refused unless at least 2 distinct positive integers; ascending."""
    text = getattr(cfg, name)
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        sizes = [int(p) if isinstance(p, int) else int(str(p).strip()) for p in parts]
    except ValueError:
        raise ValueError(f"{name} must be positive integers separated by commas, e.g. "
                         f"{COORD_WIDTHS}, got {text!r}") from None
    if any(isinstance(p, bool) or s < 1 for p, s in zip(parts, sizes, strict=True)):
        raise ValueError(f"{name} must all be positive integers, got {text!r}")
    if len(set(sizes)) < 2:
        raise ValueError(f"{name} needs at least 2 different values to compare, got {text!r}")
    if len(sizes) != len(set(sizes)) or len(sizes) > MAX_COORD_SIZES:
        raise ValueError(f"{name} must be at most {MAX_COORD_SIZES} values, each once, got "
                         f"{text!r}")
    return tuple(sorted(sizes))


def _coord_post_init(self) -> None:
    """The check's own options, then every network it trains as an EstimateConfig (which
    checks the shared fields), and the rate times every layer's multiple in float32."""
    if self.depths is not None and self.widths is not None:
        raise ValueError("give widths or depths to compare, not both")
    axis = "depth" if self.depths is not None else "width"
    if axis == "width" and self.widths is None:
        object.__setattr__(self, "widths", COORD_WIDTHS)
    object.__setattr__(self, axis + "s", ",".join(map(str, _sizes(self, axis + "s"))))
    if axis == "depth" and self.architecture != "residual":
        raise ValueError(f"depths compares residual nets (depth-μP, CompleteP): give "
                         f"architecture residual, not {self.architecture!r}, or compare widths")
    _positive_int(self, "depth", "width", "steps")
    networks = {size: self.network(size) for size in self.sizes}
    for name in OPTIMIZER_PARAMS.get(self.optimizer, {}):  # torch.optim's defaults, as used
        object.__setattr__(self, name, getattr(networks[self.sizes[0]], name))
    if self.lr is None:
        object.__setattr__(self, "lr", COORD_LRS[self.optimizer])
    _positive_float(self, "lr")
    _float32("lr", self.lr)
    object.__setattr__(self, "lr", float(self.lr))
    for size, cfg in networks.items():
        mup, scales = _mup_factor(cfg), _lr_scales(cfg)
        for what, v in (("smallest", self.lr * min(scales) / mup),
                        ("largest", self.lr * max(scales) * mup)):
            _float32(f"lr × the {what} multiple of a layer's rate at {axis} {size} "
                     f"({self.lr:g} × {v / self.lr:g})", v, f", the {what} rate trained at,")


def _coord_network(self, size: int) -> EstimateConfig:
    """The network compared at this width (or depth), trained for `steps` at lr: an
    EstimateConfig (criterion stable: no threshold to read; the search's fields unused)."""
    depth, width = (size, self.width) if self.axis == "depth" else (self.depth, size)
    return EstimateConfig(depth=depth, width=width, steps=self.steps, criterion="stable",
                          eval_every=self.steps, widen=1.0,
                          **{name: getattr(self, name) for name in COORD_FIELDS})


# The options of `milr coord-check`: its own, then EstimateConfig's of COORD_FIELDS (one source
# of their defaults, help and checks).
CoordConfig = make_dataclass(
    "CoordConfig",
    [(f.name, f.type, field(default=f.default, metadata=f.metadata)) for f in fields(_CoordOwn)]
    + [(f.name, f.type, field(default=f.default, metadata=f.metadata))
       for name in COORD_FIELDS for f in fields(EstimateConfig) if f.name == name],
    frozen=True,
    namespace={"__doc__": "A coordinate check: which widths (or depths), how many steps at "
                          "which rate, and the networks' shared settings.",
               "__post_init__": _coord_post_init, "network": _coord_network,
               "axis": property(lambda self: "depth" if self.depths is not None else "width"),
               "sizes": property(lambda self: _sizes(self, self.axis + "s")),
               "row": EstimateConfig.row, "__module__": __name__})


@dataclass(frozen=True)
class FitConfig:
    """Which cells of a results table are fitted, and how seeds are aggregated."""

    column: str = opt("lr_star", "Column to fit.")
    aggregate: str = opt("median", "Seeds per cell: median or mean.")
    where: tuple[str, ...] = opt((), 'Keep cells where this holds, e.g. "width >= 8 * depth" '
                                     '(repeatable).')
    min_depth: int | None = opt(None, "Smallest depth kept.")
    max_depth: int | None = opt(None, "Largest depth kept.")
    min_width: int | None = opt(None, "Smallest width kept.")
    max_width: int | None = opt(None, "Largest width kept.")
    bootstrap: int = opt(0, "Bootstrap resamples over cells (0: off).")
    seed: int = opt(0, "Bootstrap seed.")

    def __post_init__(self) -> None:
        _choice(self, "aggregate", AGGREGATES)
        if not isinstance(self.bootstrap, int) or self.bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0, got {self.bootstrap!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name in ("min_depth", "max_depth", "min_width", "max_width"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        object.__setattr__(self, "where", tuple(self.where or ()))

    def filters(self) -> dict:
        return {"where": list(self.where), "min_depth": self.min_depth,
                "max_depth": self.max_depth, "min_width": self.min_width,
                "max_width": self.max_width}


def defaults(cls) -> SimpleNamespace:
    """The default of every field of a config class (the CLI's option defaults)."""
    return SimpleNamespace(**{f.name: f.default for f in fields(cls)})


def help_for(cls, name: str) -> str:
    return next(f.metadata["help"] for f in fields(cls) if f.name == name)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive_int(cfg, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _positive_float(cfg, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not (_finite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number, got {v!r}")


def _choice(cfg, name: str, allowed: tuple[str, ...]) -> None:
    v = getattr(cfg, name)
    if v not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {v!r}")
