"""K independent networks (MLPs or residual nets, `Arch`) as stacked weight tensors: one
batched matmul per layer for all of them.

A member is defined by its seed alone (initialisation and data order), so the same (lr, seed)
gives the same run whichever other members share the batch. The forward pass is written once
(`Ensemble.forward`): training, evaluation and λ1 (`milr.sharpness`, with K = 1 and autograd)
all run it. So is the backward pass, written by hand (`Ensemble.step`): no autograd graph, no
optimiser object, no per-member Python loop. An update rule (`Optim.rule`) is all that differs
between optimizers: plain SGD folds each member's learning rate into the weight update (one
`baddbmm_` per layer); the others (momentum, Nesterov, Adam, AdamW, weight decay) follow
torch.optim's update rules, their state stacked beside the weights (`Ensemble.state`). A
parametrisation (`Layout`: sp, ntk, mup) sets each layer's forward multiplier, the scale of its
stored initial weights and its learning rates: a table of scales per layer (`Rates`).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from ..base.config import BRANCH_SCALES, weight_layers
from ..base.seeding import WEIGHTS, member_seed

# The chunk an evaluation used before its early exit: chunk boundaries keep to its blocks.
EVAL_BLOCK = 4096


def eval_chunks(n: int, chunk: int) -> list[tuple[int, int]]:
    """[start, end) of the chunks an evaluation of n examples runs through: `chunk` examples
    each within blocks of EVAL_BLOCK, except a last block whose length is not a multiple of 4,
    which stays whole. A row's logits then equal those of an evaluation in EVAL_BLOCK chunks
    bit for bit (a CPU matmul gives a row different last bits when the row count around it is
    not a multiple of 4), so a finer chunk changes no accuracy."""
    if chunk < 4 or chunk % 4 or EVAL_BLOCK % chunk:
        raise ValueError(f"an evaluation chunk must be a multiple of 4 dividing {EVAL_BLOCK}, "
                         f"got {chunk}")
    out = []
    for b in range(0, n, EVAL_BLOCK):
        e = min(b + EVAL_BLOCK, n)
        out += [(b, e)] if (e - b) % 4 else [(i, min(i + chunk, e)) for i in range(b, e, chunk)]
    return out


# Variance of the output layer's weights times its fan-in.
OUTPUT_GAINS = {"fan-in": 1.0, "he": 2.0, "zero": 0.0}
# Variance of the other layers' weights times their fan-in, per activation: the square of
# torch.nn.init.calculate_gain (√2 relu, 5/3 tanh, 1 linear; abs has relu's √2), written as the
# exact 2 where √2² would round to 2.0000000000000004.
HIDDEN_GAINS = {"relu": 2.0, "tanh": (5 / 3) ** 2, "linear": 1.0, "abs": 2.0}


def init_weights(seed: int, n_in: int, depth: int, width: int, classes: int,
                 output_init: str = "fan-in", activation: str = "relu") -> list[torch.Tensor]:
    """depth + 1 layers: normal weights of variance HIDDEN_GAINS[activation] / fan_in (He for
    relu) before the output layer and OUTPUT_GAINS[output_init] / fan_in there, on the CPU.
    depth counts the weight layers before the output layer: an MLP's depth, a residual net's
    depth + 1 (its input layer and blocks).

    Drawn on the CPU from the seed so that CPU and GPU runs start from identical weights; the
    output layer is drawn (then scaled) whatever its gain, so the hidden layers of a seed are
    the same under every output_init.
    """
    gain_out = OUTPUT_GAINS[output_init]
    gen = torch.Generator().manual_seed(member_seed(seed, WEIGHTS))
    dims = [n_in] + [width] * depth + [classes]
    ws = []
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        gain = gain_out if i == depth else HIDDEN_GAINS[activation]
        ws.append(torch.randn(fan_in, fan_out, generator=gen) * (gain / fan_in) ** 0.5)
    return ws


@dataclass(frozen=True)
class Arch:
    """How the layers connect: an MLP (h ↦ φ(layer(h)) through every layer but the output), or a
    residual net (h_0 = layer 0 (x); h_l = h_{l-1} + alpha · layer l (φ(h_{l-1})) for each
    block l; the output layer takes φ(h_L)). φ is `activation`."""

    residual: bool = False
    activation: str = "relu"
    alpha: float = 1.0

    @classmethod
    def of(cls, cfg) -> Arch:
        """cfg's (an EstimateConfig or NetworkConfig): α by its branch_scale and depth."""
        return cls(cfg.architecture == "residual", cfg.activation,
                   BRANCH_SCALES[cfg.branch_scale](cfg.depth))


@dataclass(frozen=True)
class Layout:
    """What a parametrisation makes of each layer l = 0 (input) ... last (output): layer l
    computes h ↦ multipliers[l] · (h W_l) + b_l; W_l starts at init_weights' draw × init_scales[l]
    (biases at 0); W_l trains at η · weight_lr[l] with weight decay λ · weight_wd[l], b_l at
    η · bias_lr[l] with λ · bias_wd[l]. docs/protocol.md has the table."""

    multipliers: tuple[float, ...]
    init_scales: tuple[float, ...]
    weight_lr: tuple[float, ...]
    bias_lr: tuple[float, ...]
    weight_wd: tuple[float, ...]
    bias_wd: tuple[float, ...]

    @classmethod
    def sp(cls, depth: int, lr_scales: list[float] | None = None) -> Layout:
        """The standard parametrisation with per-layer rates `lr_scales` (default all 1)."""
        ones = (1.0,) * (depth + 1)
        lr = tuple(lr_scales) if lr_scales is not None else ones
        return cls(ones, ones, lr, lr, ones, ones)

    @classmethod
    def of(cls, cfg, n_in: int) -> Layout:
        """The layout of cfg's network (an EstimateConfig: depth, width, architecture,
        activation, output_init, parametrization, base_width, optimizer, input_lr_scale,
        output_lr_scale, block_lr_depth_exponent). The layers between the input and the output
        layer (an MLP's hidden layers after the first, a residual net's blocks) are its hidden
        layers here.

        ntk: W ~ N(0, 1) and multiplier √(gain / fan_in) (the activation's gain on the other
        layers, the output_init gain on the output layer): the same function as sp at
        initialisation.
        mup: Microsoft's mup package for an MLP whose width is its only width dimension, with
        m = width / base_width: the output layer is a MuReadout (input ÷ m, weights × √m as
        set_base_shapes rescales them); MuSGD multiplies the rate of every parameter with one
        width dimension by m (input weights, hidden and input biases, output weights) and its
        weight decay by 1/m, MuAdam divides the rate of the hidden weights (two width
        dimensions) by m and multiplies their weight decay by m; everything else × 1.
        input_lr_scale and output_lr_scale then multiply the rates of the input and the output
        layer (as param groups do before MuSGD or MuAdam splits them), and a residual net's
        blocks' rates are × depth^block_lr_depth_exponent.
        """
        depth = last = weight_layers(cfg) - 1
        block = float(cfg.depth) ** cfg.block_lr_depth_exponent  # 1 on an MLP
        user = [cfg.input_lr_scale] + [block] * (depth - 1) + [cfg.output_lr_scale]
        mult = [1.0] * (depth + 1)
        init = [1.0] * (depth + 1)
        mup_w = [1.0] * (depth + 1)
        mup_b = [1.0] * (depth + 1)
        if cfg.parametrization == "ntk":
            fans = [n_in] + [cfg.width] * depth
            gains = [HIDDEN_GAINS[cfg.activation]] * depth + [OUTPUT_GAINS[cfg.output_init]]
            mult = [math.sqrt(g / f) for g, f in zip(gains, fans, strict=True)]
            init = [math.sqrt(f / g) for g, f in zip(gains, fans, strict=True)]
        elif cfg.parametrization == "mup":
            m = cfg.width / cfg.base_width
            mult[last], init[last] = 1.0 / m, math.sqrt(m)
            if cfg.optimizer in ("adam", "adamw"):
                mup_w = [1.0] + [1.0 / m] * (depth - 1) + [1.0]  # hidden weights only
            else:
                mup_w = [m] + [1.0] * (depth - 1) + [m]  # one width dimension: input, output
                mup_b = [m] * depth + [1.0]  # the output bias has none
        return cls(tuple(mult), tuple(init),
                   tuple(u * s for u, s in zip(user, mup_w, strict=True)),
                   tuple(u * s for u, s in zip(user, mup_b, strict=True)),
                   tuple(1.0 / s for s in mup_w), tuple(1.0 / s for s in mup_b))

    def parameter_lr_scales(self) -> list[float]:
        """The rate multiple of each tensor of `Ensemble.parameters()` (W0, b0, W1, b1, ...)."""
        return [s for pair in zip(self.weight_lr, self.bias_lr, strict=True) for s in pair]


@dataclass(frozen=True)
class Optim:
    """An optimizer's update rule, torch.optim's: sgd (SGD), momentum (SGD with momentum,
    dampening 0), nesterov (SGD, nesterov=True), adam (Adam), adamw (AdamW); never amsgrad."""

    name: str = "sgd"
    momentum: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    @classmethod
    def of(cls, cfg) -> Optim:
        """cfg's optimizer (an EstimateConfig; unset hyper-parameters are not used by it)."""
        kw = {k: getattr(cfg, k) for k in ("momentum", "beta1", "beta2", "eps")
              if getattr(cfg, k) is not None}
        return cls(cfg.optimizer, weight_decay=cfg.weight_decay, **kw)

    @property
    def slots(self) -> tuple[str, ...]:
        """Names of the per-parameter state tensors it keeps (each the size of its parameter)."""
        if self.name in ("momentum", "nesterov"):
            return ("momentum_buffer",)
        if self.name in ("adam", "adamw"):
            return ("exp_avg", "exp_avg_sq")
        return ()

    def rule(self, rates: Rates, steps_done: torch.Tensor, decay: list[float],
             fused: bool = True) -> Update:
        """Its update for one step of every member at `rates`: plain SGD without weight decay
        fused where allowed (`SgdUpdate`, an Ensemble's layers only), anything else
        torch.optim's rule (`OptimUpdate`, with decay[j] the weight decay of parameter tensor j
        and steps_done (K,) the steps each member has taken before, for Adam's bias
        correction)."""
        if fused and self.name == "sgd" and self.weight_decay == 0:
            return SgdUpdate.at(rates)
        corrections = (adam_corrections(steps_done, rates, self) if self.name in
                       ("adam", "adamw") else None)
        return OptimUpdate(self, rates.per_tensor(), decay, corrections)


@dataclass(frozen=True)
class Rates:
    """Each member's learning rate (K, 1, 1) times every scale of a per-tensor table: tensor j
    of the parameters (an Ensemble's W0, b0, W1, b1, ...; a module's in its order) trains at
    tensors[scales[j]]. One tensor per distinct scale, so tensors of one scale share their
    rate: the table's numbers say which rates are shared, never the tensors' identity (a copy
    of a tensor changes nothing)."""

    scales: tuple[float, ...]
    tensors: dict[float, torch.Tensor]

    @classmethod
    def of(cls, layout: Layout, lr: torch.Tensor) -> Rates:
        """`layout`'s rates of members at base rates lr (K, 1, 1)."""
        scales = tuple(layout.parameter_lr_scales())
        return cls(scales, {s: lr * s for s in dict.fromkeys(scales)})

    @classmethod
    def uniform(cls, tensors: int, lr: torch.Tensor) -> Rates:
        """Every one of `tensors` parameter tensors at the members' rates lr (K, 1, 1)."""
        return cls((1.0,) * tensors, {1.0: lr})

    @property
    def weight(self) -> tuple[float, ...]:
        """An Ensemble's layer l's weights' scale, at l."""
        return self.scales[0::2]

    @property
    def bias(self) -> tuple[float, ...]:
        """An Ensemble's layer l's bias's scale, at l."""
        return self.scales[1::2]

    def times(self, factor: torch.Tensor) -> Rates:
        """Every rate × factor (K, 1, 1) (a warm-up), still one tensor per scale."""
        return replace(self, tensors={s: r * factor for s, r in self.tensors.items()})

    def per_tensor(self) -> list[torch.Tensor]:
        """The rate of each parameter tensor, in order."""
        return [self.tensors[s] for s in self.scales]


# The initial weights of one cell's seeds, kept on the device (see _initial).
_CACHE: dict = {"cell": None, "seeds": {}}
_CACHE_LOCK = threading.Lock()


def _initial(seed: int, n_in: int, depth: int, width: int, classes: int, output_init: str,
             device: torch.device, scales: tuple[float, ...] | None = None,
             activation: str = "relu") -> tuple[torch.Tensor, ...]:
    """init_weights already on `device` (each layer × its scale, if given), kept for reuse:
    every round of a search starts members from the same few seeds, and drawing a wide cell's
    weights costs more than a round of training on a GPU. Callers must copy, never modify.

    Only one cell's seeds are kept: the first call for another cell drops the previous cell's
    weights, so the cache holds what the memory check counts (a copy per seed of this cell,
    `cost.memory_bytes`), never up to 16 seeds of earlier, larger cells of a sweep."""
    cell = (n_in, depth, width, classes, output_init, device, scales, activation)
    with _CACHE_LOCK:
        if _CACHE["cell"] != cell:
            _CACHE["cell"], _CACHE["seeds"] = cell, {}
        if seed in _CACHE["seeds"]:
            return _CACHE["seeds"][seed]
    ws = init_weights(seed, n_in, depth, width, classes, output_init, activation)
    if scales is not None:
        ws = [w if s == 1.0 else w * s for w, s in zip(ws, scales, strict=True)]
    out = tuple(w.to(device) for w in ws)
    with _CACHE_LOCK:
        if _CACHE["cell"] == cell:
            _CACHE["seeds"].setdefault(seed, out)
    return out


def initial_cache_bytes() -> int:
    """Bytes of initial weights the cache holds now (one cell's seeds)."""
    with _CACHE_LOCK:
        return sum(w.numel() * w.element_size() for ws in _CACHE["seeds"].values() for w in ws)


def zero_output_loss(loss: str, classes: int) -> float:
    """The loss of all-zero outputs: what a network that has learnt nothing scores."""
    return math.log(classes) if loss == "ce" else 0.5 / classes


def loss_value(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """The training loss per member, differentiable: logits (K, B, C), y (K, B) -> (K,).

    ce: mean cross-entropy. mse: 1/2 x the mean over batch and classes of (logits - onehot)^2.
    """
    if loss == "ce":
        return -torch.log_softmax(logits, -1).gather(-1, y.unsqueeze(-1)).mean((1, 2))
    if loss == "mse":
        onehot = torch.zeros_like(logits).scatter_(-1, y.unsqueeze(-1), 1.0)
        return 0.5 * (logits - onehot).pow(2).mean((1, 2))
    raise ValueError(f"loss must be ce or mse, got {loss!r}")


def loss_and_grad(logits: torch.Tensor, y: torch.Tensor, loss: str
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """loss_value and its gradient with respect to the logits, by hand (reusing logits' memory).

    logits (K, B, C), y (K, B) -> loss (K,), d loss / d logits (K, B, C).
    """
    batch = logits.shape[1]
    if loss == "ce":
        logp = torch.log_softmax(logits, -1)
        value = -logp.gather(-1, y.unsqueeze(-1)).mean((1, 2))
        g = logp.exp_()  # (softmax - onehot) / B
        g.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(g[..., :1], -1.0))
        return value, g.div_(batch)
    if loss == "mse":
        diff = logits.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(logits[..., :1], -1.0))
        value = 0.5 * diff.pow(2).mean((1, 2))
        return value, diff.div_(batch * logits.shape[2])  # (logits - onehot) / (B C)
    raise ValueError(f"loss must be ce or mse, got {loss!r}")


class Ensemble:
    """Stacked parameters of K members.

    weights[l] (K, fan_in, fan_out), biases[l] (K, 1, fan_out); multipliers[l] the forward
    multiplier of layer l (see `Layout`); state[name] an optimizer's per-member state, one tensor
    per tensor of `parameters()` and of its shape (e.g. Adam's exp_avg); arch how the layers
    connect (default a ReLU MLP).
    """

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor],
                 multipliers: tuple[float, ...] | None = None,
                 state: dict[str, list[torch.Tensor]] | None = None, arch: Arch | None = None):
        assert len(weights) == len(biases) >= 2
        self.weights = weights
        self.biases = biases
        self.multipliers = tuple(multipliers or (1.0,) * len(weights))
        self.state = state or {}
        self.arch = arch or Arch()

    @classmethod
    def create(cls, seeds: list[int], n_in: int, depth: int, width: int, classes: int,
               device: torch.device | str = "cpu", output_init: str = "fan-in",
               layout: Layout | None = None, slots: tuple[str, ...] = (),
               dtype: torch.dtype = torch.float32, arch: Arch | None = None) -> Ensemble:
        """One member per seed, at its initialisation (under `layout`, default sp), with the
        optimizer state `slots` at zero; in `dtype` (the engine's is float32); `arch` (default
        a ReLU MLP) of `depth` hidden layers or blocks."""
        device = torch.device(device)
        arch = arch or Arch()
        depth += arch.residual  # weight layers before the output layer
        scales = layout.init_scales if layout is not None else None
        uniq = list(dict.fromkeys(seeds))
        with ThreadPoolExecutor(max(1, min(len(uniq), os.cpu_count() or 1))) as pool:
            # Drawing is the slow part of a large cell's first round; torch releases the GIL.
            per_seed = dict(zip(uniq, pool.map(
                lambda s: _initial(s, n_in, depth, width, classes, output_init, device, scales,
                                   arch.activation),
                uniq), strict=True))
        weights = [torch.stack([per_seed[s][layer] for s in seeds]).to(dtype)
                   for layer in range(depth + 1)]
        biases = [torch.zeros(len(seeds), 1, w.shape[2], device=device, dtype=dtype)
                  for w in weights]
        net = cls(weights, biases, layout.multipliers if layout is not None else None,
                  arch=arch)
        net.state = {name: [torch.zeros_like(p) for p in net.parameters()] for name in slots}
        return net

    @property
    def size(self) -> int:
        return self.weights[0].shape[0]

    @staticmethod
    def cat(parts: list[Ensemble]) -> Ensemble:
        """The members of all parts, in order (new members joining a running ensemble)."""
        assert len({(p.multipliers, p.arch) for p in parts}) == 1 and \
            len({tuple(p.state) for p in parts}) == 1, "members of different networks"
        return Ensemble([torch.cat(ws) for ws in zip(*(p.weights for p in parts), strict=True)],
                        [torch.cat(bs) for bs in zip(*(p.biases for p in parts), strict=True)],
                        parts[0].multipliers,
                        {name: [torch.cat(ts) for ts in zip(*(p.state[name] for p in parts),
                                                            strict=True)]
                         for name in parts[0].state}, parts[0].arch)

    def select(self, keep: torch.Tensor) -> Ensemble:
        """The members at indices `keep` (compaction: finished members stop costing work)."""
        return Ensemble([w[keep] for w in self.weights], [b[keep] for b in self.biases],
                        self.multipliers,
                        {name: [t[keep] for t in ts] for name, ts in self.state.items()},
                        self.arch)

    def parameters(self) -> list[torch.Tensor]:
        """[W0, b0, W1, b1, ...]: the tensors a loss is differentiated against (milr.sharpness)."""
        return [t for wb in zip(self.weights, self.biases, strict=True) for t in wb]

    def forward(self, x: torch.Tensor, inputs: list[torch.Tensor] | None = None,
                pre: list[torch.Tensor] | None = None,
                preacts: list[torch.Tensor] | None = None) -> torch.Tensor:
        """x (K, B, n_in) per member, or (B, n_in) shared by all members -> logits (K, B, C).

        `inputs`, when given, receives each layer's input (for the hand-written backward), and
        `pre` each activation's argument where its derivative needs it (abs only). Under
        autograd the activation is out of place, so the same pass can be differentiated twice.
        `preacts`, when given, receives every activation's argument, in order (an MLP's
        pre-activations, a residual net's stream h_0 ... h_L: what `milr coord-check` reads).
        """
        if self.arch.residual:
            return self._residual(x, inputs, pre, preacts)
        h = x
        last = len(self.weights) - 1
        for layer in range(last + 1):
            if inputs is not None:
                inputs.append(h)
            h = self._affine(layer, h)
            if layer < last:
                h = self._activate(h, pre, in_place=True, preacts=preacts)
        return h

    def _residual(self, x: torch.Tensor, inputs: list[torch.Tensor] | None,
                  pre: list[torch.Tensor] | None, preacts: list[torch.Tensor] | None = None
                  ) -> torch.Tensor:
        """`forward` of a residual net: h_0 = layer 0 (x), h_l = h_{l-1} + α · layer l
        (φ(h_{l-1})), logits = output layer (φ(h_L)). A block is one matmul added onto the
        stream (h + α·m_l · a W_l, then + α·b_l): in h's memory where nothing else holds h (no
        autograd, φ not the identity, abs' argument not kept), else into a new tensor."""
        last, alpha = len(self.weights) - 1, self.arch.alpha
        if inputs is not None:
            inputs.append(x)
        h = self._affine(0, x)
        for layer in range(1, last):
            a = self._activate(h, pre, in_place=False, preacts=preacts)
            if inputs is not None:
                inputs.append(a)
            w, b, m = self.weights[layer], self.biases[layer], self.multipliers[layer]
            shared = h.requires_grad or a is h or (pre is not None and pre[-1] is h) \
                or preacts is not None  # a recorded stream is never changed afterwards
            h = (torch.baddbmm if shared else torch.Tensor.baddbmm_)(h, a, w, alpha=alpha * m)
            h.add_(b, alpha=alpha)
        a = self._activate(h, pre, in_place=True, preacts=preacts)
        if inputs is not None:
            inputs.append(a)
        return self._affine(last, a)

    def _affine(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """Layer `layer` on h: m · h W + b."""
        w, b, m = self.weights[layer], self.biases[layer], self.multipliers[layer]
        if h.dim() == 2:
            return (torch.matmul(h, w) if m == 1.0 else torch.matmul(h, w) * m) + b
        return torch.baddbmm(b, h, w) if m == 1.0 else torch.baddbmm(b, h, w, alpha=m)

    def _activate(self, z: torch.Tensor, pre: list[torch.Tensor] | None, in_place: bool,
                  preacts: list[torch.Tensor] | None = None) -> torch.Tensor:
        """φ(z), in z's memory where allowed and nothing needs z (no autograd, no abs' sign,
        no `preacts` keeping it)."""
        if preacts is not None:
            preacts.append(z)
            in_place = False
        act = self.arch.activation
        if act == "linear":
            return z
        if act == "abs" and pre is not None:
            pre.append(z)
            in_place = False
        if in_place and not z.requires_grad:
            return {"relu": torch.relu_, "tanh": torch.tanh_, "abs": torch.abs_}[act](z)
        return {"relu": torch.relu, "tanh": torch.tanh, "abs": torch.abs}[act](z)

    def _derivative(self, g: torch.Tensor, a: torch.Tensor, z: torch.Tensor | None
                    ) -> torch.Tensor:
        """g × φ'(z), in g's memory, from a = φ(z) (and z itself for abs). ReLU's mask is made
        in g's dtype (1 or 0, NaN gives 0): a bool mask would cost a conversion in the multiply,
        several times the rest of the pass."""
        act = self.arch.activation
        if act == "relu":
            return g.mul_(torch.gt(a, 0, out=torch.empty_like(g)))
        if act == "tanh":
            return g.mul_(1 - a * a)
        if act == "abs":
            return g.mul_(torch.sign(z))
        return g

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096,
                 need: int | None = None, may_stop: torch.Tensor | None = None,
                 loss: str | None = None) -> tuple[torch.Tensor, ...]:
        """Correct answers of every member on a shared set x (N, n_in), y (N,) -> (K,) int64,
        how many of the N it evaluated (K,), and whether all its outputs there were finite (K,):
        an overflowed network's argmax means nothing. With `loss` (a scan's full evaluation,
        no `need`), a fourth: each member's mean `loss_value` over the N examples (K,).

        With `need`, the exact early exit: a member whose `may_stop` is True (its outputs are
        known to be finite on all of x, see `finite_bound`) stops being evaluated after the first
        chunk at which "correct >= need" is decided: correct >= need already, or correct plus
        the examples left < need. Every other member sees all N. The chunks are taken in x's
        order, so what a member sees depends on its own answers alone.
        """
        k, n = self.size, len(x)
        correct = torch.zeros(k, dtype=torch.long, device=x.device)
        seen = torch.zeros(k, dtype=torch.long, device=x.device)
        finite = torch.ones(k, dtype=torch.bool, device=x.device)
        total = torch.zeros(k, dtype=self.weights[0].dtype, device=x.device)
        rows = torch.arange(k, device=x.device)  # the members still evaluated
        net = self
        for i, j in eval_chunks(n, chunk):
            out = net.forward(x[i:j])  # (k', n', C)
            finite[rows] &= torch.isfinite(out).all(-1).all(-1)
            correct[rows] += (out.argmax(-1) == y[i:j]).sum(1)
            seen[rows] += len(out[0])
            if loss is not None:  # every row sees every chunk: no need, no early exit
                total += loss_value(out, y[i:j].expand(len(out), -1), loss) * (j - i)
            if need is None:
                continue
            left = n - seen[rows]
            decided = (correct[rows] >= need) | (correct[rows] + left < need)
            stop = decided & may_stop[rows] & (left > 0)
            if bool(stop.any()):
                keep = torch.nonzero(~stop).flatten()
                if len(keep) == 0:
                    break
                rows, net = rows[keep], net.select(keep)
        return (correct, seen, finite) if loss is None else (correct, seen, finite,
                                                             total / max(n, 1))

    def finite_bound(self, radius: float) -> torch.Tensor:
        """(K,) bool: True where every value the forward pass computes, on any input of 2-norm
        at most `radius`, is proven finite (`norm_bound`)."""
        return self.norm_bound(radius)[1]

    def norm_bound(self, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(K,) float64 bounds on the 2-norm of each member's logits on any input of 2-norm at
        most `radius`, and (K,) bool: True where every value the forward pass computes there
        is proven finite.

        Per layer, |each partial sum of a·W_l[:, j]| <= |a|·|W_l|_F (Cauchy-Schwarz) and
        |m·aW + b| <= m·|a|·|W_l|_F + |b|, where a layer's input a = φ(h) has |a| <= |h|: all
        the proof asks of the activation, and true of every one (|φ(x)| <= |x| elementwise for
        relu, tanh, abs and linear). A residual block adds: |h + α·out| <= |h| + |α|·|out|.
        Chained in float64, doubled per layer (and per residual sum) for rounding, against the
        largest number of the weights' dtype / 4. Weights that are not finite, or too large to
        prove anything, give False (then evaluate fully).
        """
        top = torch.finfo(self.weights[0].dtype).max / 4
        h = torch.full((self.size,), float(radius), dtype=torch.float64,
                       device=self.weights[0].device)
        ok = torch.isfinite(h)
        last = len(self.weights) - 1
        for layer, (w, b, m) in enumerate(zip(self.weights, self.biases, self.multipliers,
                                              strict=True)):
            # in the weights' dtype (no float64 copy of them): an overflow gives inf, no proof
            wn = torch.linalg.vector_norm(w, dim=(1, 2)).double()
            bn = torch.linalg.vector_norm(b, dim=(1, 2)).double()
            raw = 2 * h * wn
            out = 2 * (abs(m) * raw + bn)
            h = 2 * (h + abs(self.arch.alpha) * out) if self.arch.residual and \
                0 < layer < last else out
            ok &= torch.isfinite(raw) & torch.isfinite(h) & (raw < top) & (h < top) & (out < top)
        return h, ok

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Accuracy of every member on a shared set x (N, n_in), y (N,) -> (K,)."""
        return self.evaluate(x, y)[0].to(torch.get_default_dtype()) / len(x)

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor, update: Update, loss: str = "ce"
             ) -> torch.Tensor:
        """One training step of every member on `loss` (see loss_value): the loss before it
        (K,). x (K, B, n_in), y (K, B). One backward pass (`_backward`) for every optimizer;
        `update` (`Optim.rule`) is all that differs between them."""
        inputs: list[torch.Tensor] = []
        pre: list[torch.Tensor] | None = [] if self.arch.activation == "abs" else None
        value, g = loss_and_grad(self.forward(x, inputs, pre), y, loss)  # (K,), (K, B, C)
        backward = self._backward_residual if self.arch.residual else self._backward
        for layer, a, g_out in backward(inputs, pre, g):
            update.apply(self, layer, a, g_out)
        return value

    def _backward(self, inputs: list[torch.Tensor], pre: list[torch.Tensor] | None,
                  g: torch.Tensor) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """From the output layer down: (l, a, g), layer l's input a (K, B, fan_in) and the
        loss's gradient g (K, B, fan_out) with respect to its output, from which
        d loss / d W_l = m_l aᵀg and d loss / d b_l = g summed over the batch. The consumer may
        update layer l and overwrite g before taking the next: the gradient passed down is
        computed from W_l before, and from g as it was."""
        for layer in range(len(self.weights) - 1, -1, -1):
            w, a = self.weights[layer], inputs[layer]
            g_in = torch.bmm(g, w.transpose(1, 2)) if layer > 0 else None  # before w changes
            yield layer, a, g
            if g_in is not None:
                g = self._down(layer, g_in, inputs, pre)

    def _down(self, layer: int, g_in: torch.Tensor, inputs: list[torch.Tensor],
              pre: list[torch.Tensor] | None) -> torch.Tensor:
        """The gradient at the argument z of the activation whose output a = φ(z) is layer
        `layer`'s input, from g_in = g W_lᵀ (in g_in's memory): m_l · g_in × φ'(z)."""
        m = self.multipliers[layer]
        return self._derivative(g_in if m == 1.0 else g_in.mul_(m), inputs[layer],
                                pre[layer - 1] if pre is not None else None)

    def _backward_residual(self, inputs: list[torch.Tensor], pre: list[torch.Tensor] | None,
                           g: torch.Tensor) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """`_backward` of a residual net: the stream's gradient g_h reaches block l's output
        as α · g_h and passes the block both straight and through it (g_h + α·m_l · g_h W_lᵀ
        × φ'(h_{l-1})), accumulated in g_h's memory. The block's output gradient (the
        consumer's to change) and g_h W_lᵀ use two buffers that every block reuses."""
        last, alpha = len(self.weights) - 1, self.arch.alpha
        g_in = torch.bmm(g, self.weights[last].transpose(1, 2))
        yield last, inputs[last], g
        g_h = self._down(last, g_in, inputs, pre)  # in g_in's memory
        g_in, g_out = torch.empty_like(g_h), torch.empty_like(g_h)
        for layer in range(last - 1, 0, -1):
            torch.bmm(g_h, self.weights[layer].transpose(1, 2), out=g_in)  # before W_l changes
            torch.mul(g_h, alpha, out=g_out)
            yield layer, inputs[layer], g_out
            self._derivative(g_in, inputs[layer], pre[layer - 1] if pre is not None else None)
            g_h.add_(g_in, alpha=alpha * self.multipliers[layer])
        yield 0, inputs[0], g_h

    def sgd_step(self, x: torch.Tensor, y: torch.Tensor, lrs: list[torch.Tensor],
                 loss: str = "ce") -> torch.Tensor:
        """One plain SGD step with layer l (weights and bias) at rate lrs[l] (K, 1, 1) per
        member: `step` with `SgdUpdate`; returns the loss before it (K,)."""
        return self.step(x, y, SgdUpdate(list(lrs), [None] * len(lrs)), loss)


class Update(Protocol):
    """An optimizer's update rule: how one layer changes, given its gradient (`_backward`)."""

    def apply(self, net: Ensemble, layer: int, a: torch.Tensor, g: torch.Tensor) -> None:
        """Update net's layer `layer` from its input a and output gradient g (g is ours to
        overwrite)."""


@dataclass(frozen=True)
class SgdUpdate:
    """Plain SGD fused: each member's rate folded into the gradient, the weights updated by one
    `baddbmm_` without forming their gradient. weight[l] the rate (K, 1, 1) of layer l;
    bias[l] its bias's where that differs (μP), else None."""

    weight: list[torch.Tensor]
    bias: list[torch.Tensor | None]

    @classmethod
    def at(cls, rates: Rates) -> SgdUpdate:
        """At `rates`: a bias's own rate only where its scale differs from its weight's."""
        return cls([rates.tensors[s] for s in rates.weight],
                   [None if b == w else rates.tensors[b]
                    for w, b in zip(rates.weight, rates.bias, strict=True)])

    def apply(self, net: Ensemble, layer: int, a: torch.Tensor, g: torch.Tensor) -> None:
        w, m, bias_lr = net.weights[layer], net.multipliers[layer], self.bias[layer]
        if bias_lr is not None:
            net.biases[layer].sub_(g.sum(1, keepdim=True).mul_(bias_lr))
            g.mul_(self.weight[layer])
        else:
            g.mul_(self.weight[layer])
            net.biases[layer].sub_(g.sum(1, keepdim=True))
        w.baddbmm_(a.transpose(1, 2), g, alpha=-m)  # d loss / d W = m a^T g


@dataclass(frozen=True)
class OptimUpdate:
    """torch.optim's update rule of `opt` on the gradients, with lrs[j] (K, 1, 1) and decay[j]
    the rate and weight decay of tensor j of `parameters()` (W0, b0, W1, ...); the state tensors
    in `Ensemble.state` (opt.slots) are updated in place, as torch.optim's per-parameter state.
    corrections: Adam's (`adam_corrections`), None for the others."""

    opt: Optim
    lrs: list[torch.Tensor]
    decay: list[float]
    corrections: tuple[torch.Tensor, list[torch.Tensor]] | None

    def apply(self, net: Ensemble, layer: int, a: torch.Tensor, g: torch.Tensor) -> None:
        w, m = net.weights[layer], net.multipliers[layer]
        gw = torch.bmm(a.transpose(1, 2), g)
        if m != 1.0:
            gw.mul_(m)
        gb = g.sum(1, keepdim=True)
        for j, p, grad in ((2 * layer, w, gw), (2 * layer + 1, net.biases[layer], gb)):
            self.tensor(net.state, j, p, grad)

    def tensor(self, state: dict[str, list[torch.Tensor]], j: int, p: torch.Tensor,
               grad: torch.Tensor) -> None:
        """torch.optim's update of parameter tensor j, in place (its gradient `grad` is ours to
        change): p and grad (K, ...) with the rate's (K, 1, 1) broadcasting over them, e.g. an
        Ensemble's (K, fan_in, fan_out) or any tensor viewed as (K, 1, n); the one per-tensor
        rule of both engines (`func.Stack` calls it per tensor of a module)."""
        opt, lr, decay = self.opt, self.lrs[j], self.decay[j]
        if opt.name in ("adam", "adamw"):
            exp_avg, exp_avg_sq = state["exp_avg"][j], state["exp_avg_sq"][j]
            if decay and opt.name == "adamw":
                p.mul_(1 - lr * decay)  # decoupled
            elif decay:
                grad.add_(p, alpha=decay)
            exp_avg.lerp_(grad, 1 - opt.beta1)
            exp_avg_sq.mul_(opt.beta2).addcmul_(grad, grad, value=1 - opt.beta2)
            eps_term, factors = self.corrections
            # torch's p - lr / bias1 · m / (√v / bias2_sqrt + eps), in four passes over the
            # weights: p - m / ((√v + eps · bias2_sqrt) · bias1 / (lr · bias2_sqrt))
            denom = torch.sqrt(exp_avg_sq, out=grad)  # the gradient's memory: used up
            denom.add_(eps_term).mul_(factors[j])
            p.addcdiv_(exp_avg, denom, value=-1.0)
            return
        if decay:
            grad.add_(p, alpha=decay)
        if opt.name in ("momentum", "nesterov"):
            # A zero buffer times momentum plus the first gradient is that gradient exactly:
            # torch.optim's buffer that starts as a copy of it.
            buf = state["momentum_buffer"][j]
            torch.add(grad, buf, alpha=opt.momentum, out=buf)  # buf ← momentum · buf + grad
            grad = grad.add_(buf, alpha=opt.momentum) if opt.name == "nesterov" else buf
        p.addcmul_(grad, lr, value=-1.0)


def adam_corrections(steps_done: torch.Tensor, rates: Rates, opt: Optim
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Adam's per-member factors for `OptimUpdate`: eps · √(1 - β2^t) and, per tensor j of
    `parameters()`, (1 - β1^t) / (rate_j · √(1 - β2^t)). Computed in float64 as torch.optim
    does in Python floats (in float32, 1 - 0.999^t is 1.3e-5 off at t = 1), each rounded once
    to the rates' dtype; one per distinct scale of `rates`."""
    step = (steps_done + 1).to(torch.float64).view(-1, 1, 1)
    bias1 = 1 - torch.pow(opt.beta1, step)
    bias2_sqrt = (1 - torch.pow(opt.beta2, step)).sqrt_()
    dtype = next(iter(rates.tensors.values())).dtype
    by_scale = {s: (bias1 / (lr.to(torch.float64) * bias2_sqrt)).to(dtype)
                for s, lr in rates.tensors.items()}
    return (opt.eps * bias2_sqrt).to(dtype), [by_scale[s] for s in rates.scales]
