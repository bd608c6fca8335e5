"""Architectures and activations held to the textbook: a plainly written nn.Module (a loop over
nn.Linear blocks) trained by torch.optim and autograd gives the engine's loss at every step
(float64); and their options end to end (config, results, protocol words)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from milr.base.config import EstimateConfig
from milr.base.results import protocol_line
from milr.base.seeding import WEIGHTS, batch_schedule, member_seed
from milr.engine.model import Arch, Ensemble, Layout, init_weights
from milr.engine.train import BatchedTrainer

STEPS = 20
PHI = {"relu": torch.relu, "tanh": torch.tanh, "linear": lambda z: z, "abs": torch.abs}
ALPHA = {"none": lambda n: 1.0, "sqrt-depth": lambda n: n ** -0.5, "depth": lambda n: 1 / n}


def config(**kw) -> EstimateConfig:
    base = dict(depth=3, width=16, steps=200, batch_size=32, eval_every=30, threshold=0.75)
    return EstimateConfig(**{**base, **kw})


def textbook_table(cfg: EstimateConfig, n_in: int) -> list[tuple[float, float, float, float]]:
    """docs/protocol.md §2's per-layer table, written out for the textbook: per layer (input,
    each hidden layer or block, output) the factor on sp's initial draw, the multiplier a, and
    the rate factors of its weight and its bias."""
    k2 = nn.init.calculate_gain("relu" if cfg.activation == "abs" else cfg.activation) ** 2
    g = {"fan-in": 1.0, "he": 2.0}[cfg.output_init]
    w, s_in, s_out = cfg.width, cfg.input_lr_scale, cfg.output_lr_scale
    hidden = cfg.depth - (cfg.architecture == "mlp")
    e = cfg.depth ** cfg.block_lr_depth_exponent
    if cfg.parametrization == "ntk":  # N(0, 1) stored, a = √(k² / fan_in)
        return ([(math.sqrt(n_in / k2), math.sqrt(k2 / n_in), s_in, s_in)]
                + [(math.sqrt(w / k2), math.sqrt(k2 / w), e, e)] * hidden
                + [(math.sqrt(w / g), math.sqrt(g / w), s_out, s_out)])
    if cfg.parametrization == "mup":  # the readout: draw × √m, a = 1/m
        m = w / cfg.base_width
        if cfg.optimizer in ("adam", "adamw"):  # MuAdam: hidden weights' rate / m
            return ([(1.0, 1.0, s_in, s_in)] + [(1.0, 1.0, e / m, e)] * hidden
                    + [(math.sqrt(m), 1 / m, s_out, s_out)])
        return ([(1.0, 1.0, s_in * m, s_in * m)] + [(1.0, 1.0, e, e * m)] * hidden  # MuSGD
                + [(math.sqrt(m), 1 / m, s_out * m, s_out)])
    return [(1.0, 1.0, s_in, s_in)] + [(1.0, 1.0, e, e)] * hidden + [(1.0, 1.0, s_out, s_out)]


class Plain(nn.Module):
    """The network as docs/protocol.md §2 defines it, written without milr's engine: layer i
    computes a_i · (h W_iᵀ) + b_i (a_i from `textbook_table`)."""

    def __init__(self, cfg: EstimateConfig, n_in: int, classes: int):
        super().__init__()
        self.cfg, self.phi = cfg, PHI[cfg.activation]
        w, residual = cfg.width, cfg.architecture == "residual"
        self.first = nn.Linear(n_in, w)
        self.hidden = nn.ModuleList(nn.Linear(w, w) for _ in range(cfg.depth - (not residual)))
        self.out = nn.Linear(w, classes)
        self.alpha = ALPHA[cfg.branch_scale](cfg.depth)
        self.a = [row[1] for row in textbook_table(cfg, n_in)]

    def layer(self, i: int, lin: nn.Linear, h: torch.Tensor) -> torch.Tensor:
        return self.a[i] * (h @ lin.weight.T) + lin.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.hidden) + 1
        if self.cfg.architecture == "mlp":
            h = self.phi(self.layer(0, self.first, x))
            for i, lin in enumerate(self.hidden, 1):
                h = self.phi(self.layer(i, lin, h))
            return self.layer(last, self.out, h)
        h = self.layer(0, self.first, x)
        for i, lin in enumerate(self.hidden, 1):
            h = h + self.alpha * self.layer(i, lin, self.phi(h))
        return self.layer(last, self.out, self.phi(h))

    def linears(self) -> list[nn.Linear]:
        return [self.first, *self.hidden, self.out]


def plain_net(cfg: EstimateConfig, data, seed: int) -> Plain:
    """At milr's initial draws for `seed` (nn.Linear holds them transposed) times the table's
    initial factors, zero biases. The draws are float32 (the engine's dtype), rescaled there
    as the engine stores them: ntk's N(0, 1) weights are the draw × √(k²/fan_in) × √(fan_in/k²)
    rounded in float32, not the raw normal draw (rescaled in float64 instead, the losses
    differ by ~3e-8)."""
    net = Plain(cfg, data.n_inputs, data.classes)
    layers = net.linears()
    ws = init_weights(seed, data.n_inputs, len(layers) - 1, cfg.width, data.classes,
                      cfg.output_init, cfg.activation)
    table = textbook_table(cfg, data.n_inputs)
    with torch.no_grad():
        for lin, w, row in zip(layers, ws, table, strict=True):
            lin.weight.copy_(w.T * row[0])
            lin.bias.zero_()
    return net.double()


def plain_losses(cfg: EstimateConfig, data, lr: float, seed: int) -> torch.Tensor:
    """The loss before each of the first STEPS steps of torch.optim on the plain network, each
    weight and bias in its own param group at lr × the table's rate factor."""
    net = plain_net(cfg, data, seed)
    groups = [{"params": [p], "lr": lr * r}
              for lin, row in zip(net.linears(), textbook_table(cfg, data.n_inputs), strict=True)
              for p, r in ((lin.weight, row[2]), (lin.bias, row[3]))]
    opt = torch.optim.SGD(groups, lr=lr) if cfg.optimizer == "sgd" else torch.optim.Adam(
        groups, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    order = batch_schedule(seed, len(data.x_train), STEPS, cfg.batch_size)
    out = []
    for idx in order:
        loss = nn.functional.cross_entropy(net(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(loss.item())
    return torch.tensor(out, dtype=torch.float64)


def engine_losses(cfg: EstimateConfig, data, lr: float, seed: int) -> torch.Tensor:
    trainer = BatchedTrainer(cfg, data, dtype=torch.float64)
    trainer.admit([lr], [seed])
    return torch.stack([trainer._step() for _ in range(STEPS)], 1)[0].double()


def gap(cfg: EstimateConfig, data, lr: float, seed: int = 0) -> float:
    """The largest relative difference between the engine's and the textbook's losses (which
    must stay finite: two overflows would agree on nothing)."""
    engine, ref = engine_losses(cfg, data, lr, seed), plain_losses(cfg, data, lr, seed)
    assert torch.isfinite(ref).all()
    return float(((engine - ref).abs() / ref.abs()).max())


@pytest.fixture(scope="module")
def tiny64(tiny):
    return dataclasses.replace(tiny, x_train=tiny.x_train.double(), x_eval=tiny.x_eval.double())


NETWORKS = ([("mlp", a, "none") for a in ("relu", "tanh", "linear", "abs")]
            + [("residual", a, b) for a in ("relu", "tanh", "abs")
               for b in ("none", "sqrt-depth", "depth")])


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.1), ("adam", 3e-3)])
@pytest.mark.parametrize("architecture, activation, branch_scale", NETWORKS)
def test_every_network_follows_its_textbook_at_every_step(architecture, activation,
                                                          branch_scale, optimizer, lr, tiny64):
    cfg = config(architecture=architecture, activation=activation, branch_scale=branch_scale,
                 optimizer=optimizer, output_lr_scale=0.5)
    assert gap(cfg, tiny64, lr) < 1e-10


# Each branch scale with its own activation (so that a gain in ntk's multiplier is k² of that
# activation) and block-rate exponent (depth-μP's e = -1/2 with 1/√L).
BLOCKS = [("none", "relu", 0.0), ("sqrt-depth", "tanh", -0.5), ("depth", "abs", 0.0)]


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.1), ("adam", 3e-3)])
@pytest.mark.parametrize("parametrization, base_width", [("ntk", None), ("mup", 4)])
@pytest.mark.parametrize("branch_scale, activation, exponent", BLOCKS)
def test_residual_nets_follow_the_table_under_ntk_and_mup(branch_scale, activation, exponent,
                                                          parametrization, base_width,
                                                          optimizer, lr, tiny64):
    """The engine's residual net under ntk and mup (m = 4) against the textbook whose
    multipliers, initial factors and per-tensor rates are docs/protocol.md's table."""
    cfg = config(architecture="residual", branch_scale=branch_scale, activation=activation,
                 block_lr_depth_exponent=exponent, parametrization=parametrization,
                 base_width=base_width, optimizer=optimizer, output_lr_scale=0.5)
    assert gap(cfg, tiny64, lr) < 1e-10


def test_block_rates_follow_their_textbook(tiny64):
    """depth^e on the blocks' rates, and it changes the run (the comparison would see it)."""
    cfg = config(architecture="residual", branch_scale="sqrt-depth", activation="tanh",
                 block_lr_depth_exponent=-0.5)
    assert gap(cfg, tiny64, 0.5) < 1e-10
    plain = dataclasses.replace(cfg, block_lr_depth_exponent=0.0)
    assert float((engine_losses(cfg, tiny64, 0.5, 0)
                  - engine_losses(plain, tiny64, 0.5, 0)).abs().max()) > 1e-4


@pytest.mark.parametrize("activation", ["tanh", "abs", "linear"])
def test_a_wrong_derivative_is_seen(activation, tiny64, monkeypatch):
    """The comparison has teeth: the engine with ReLU's derivative in place of the activation's
    drifts from the textbook by far more than the tolerance."""
    def relu_mask(self, g, a, z):
        return g.mul_(a > 0)

    monkeypatch.setattr(Ensemble, "_derivative", relu_mask)
    cfg = config(architecture="residual", activation=activation, branch_scale="sqrt-depth")
    assert gap(cfg, tiny64, 0.1) > 1e-6


def test_branch_scale_and_activation_change_the_network(tiny64):
    """Each option changes the losses: none is a no-op the textbook comparison would miss."""
    base = config(architecture="residual", activation="tanh")
    ref = engine_losses(base, tiny64, 0.1, 0)
    for kw in ({"branch_scale": "depth"}, {"activation": "abs"}, {"architecture": "mlp"}):
        other = engine_losses(dataclasses.replace(base, **kw), tiny64, 0.1, 0)
        assert float((other - ref).abs().max()) > 1e-4, kw


@pytest.mark.parametrize("activation", ["relu", "tanh", "linear", "abs"])
def test_hidden_weights_have_the_activations_gain(activation):
    """Input and hidden weights: torch's calculate_gain (√2 for abs) / √fan_in times the seed's
    normal draw; the output layer keeps its output_init variance (fan-in: 1 / fan_in)."""
    gain = math.sqrt(2) if activation == "abs" else nn.init.calculate_gain(activation)
    ws = init_weights(5, 12, 2, 8, 3, activation=activation)
    gen = torch.Generator().manual_seed(member_seed(5, WEIGHTS))
    for w, fan_in, g in zip(ws, (12, 8, 8), (gain, gain, 1.0), strict=True):
        draw = torch.randn(fan_in, w.shape[1], generator=gen)
        torch.testing.assert_close(w, draw * g / math.sqrt(fan_in), rtol=1e-6, atol=0)


def test_a_residual_net_has_two_more_weight_layers_than_blocks(tiny64):
    """Input layer, 4 blocks (at depth^1 = 4 times the rate), output layer."""
    cfg = config(architecture="residual", depth=4, block_lr_depth_exponent=1.0)
    assert Layout.of(cfg, tiny64.n_inputs).weight_lr == (0.1, 4.0, 4.0, 4.0, 4.0, 1.0)
    net = Ensemble.create([0], tiny64.n_inputs, 4, 16, 2, arch=Arch.of(cfg))
    assert [tuple(w.shape[1:]) for w in net.weights] == [(16, 16)] * 5 + [(16, 2)]


@pytest.mark.parametrize("kw, words", [
    ({}, None),
    ({"activation": "tanh"}, "tanh"),
    ({"architecture": "residual"}, "residual"),
    ({"architecture": "residual", "branch_scale": "sqrt-depth", "block_lr_depth_exponent": -1.0},
     "residual (branches × 1/√depth, blocks' lr × depth^-1)"),
])
def test_the_protocol_line_names_the_network_where_not_the_default(kw, words):
    line = protocol_line(config(**kw))
    if words is None:
        assert "residual" not in line and "relu" not in line and "mlp" not in line
    else:
        assert words in line


def test_sharpness_takes_the_network_as_built(tiny):
    """λ1's network is the engine's: a residual net's depth + 2 layers, its arch and α."""
    from milr.engine.sharpness import network

    cfg = config(architecture="residual", activation="tanh", branch_scale="depth").network
    net = network(cfg, tiny, 0)
    assert len(net.weights) == cfg.depth + 2 and net.arch == Arch(True, "tanh", 1 / 3)


def designed_net(design: str, activation: str, s_out: float,
                 dtype: torch.dtype = torch.float32) -> tuple[Ensemble, float]:
    """A residual net of 3 blocks, width 4, zero biases, and the radius of its inputs, where a
    bound that is not the residual one goes wrong. The input layer is 1e18 · I, the output
    layer s_out everywhere. "skip": blocks of 1e-30, α = 1: the logits come through the skip
    path (a product of the layers' norms, or a bound without the skip term, is ~1e-88 of
    them). "alpha": blocks of 1/4 (Frobenius norm 1), α = 1e6: each block multiplies the
    stream by 1 + α along (1, 1, 1, 1) (a bound without α is ~1e-16 of it). Every weight's
    norm is finite in float32, so the bound has to follow the stream to refuse a proof."""
    blocks, alpha, radius = ((1e-30, 1.0, 1e3) if design == "skip" else (0.25, 1e6, 1e-12))
    ws = [1e18 * torch.eye(4)] + [torch.full((4, 4), blocks)] * 3 + [torch.full((4, 2), s_out)]
    ws = [w.to(dtype).unsqueeze(0) for w in ws]
    return (Ensemble(ws, [torch.zeros_like(w[:, :1]) for w in ws],
                     arch=Arch(True, activation, alpha)), radius)


@pytest.mark.parametrize("design", ["skip", "alpha"])
@pytest.mark.parametrize("activation", ["relu", "linear", "abs"])
def test_the_finite_bound_follows_the_residual_stream(activation, design):
    """Logits that overflow float32 at an input of the radius's norm are not proven finite,
    though every block is tiny ("skip") or of norm 1 ("alpha"); with an output layer of ones
    the same net is finite, and the bound proves it. (tanh's logits are at most
    |W_out|_F · √width: with weights of finite norm they cannot overflow, so tanh is checked
    on the bound's value alone, below.)"""
    x = torch.full((1, 4), 0.5)  # norm 1, every unit alike
    for s_out, finite in ((1e18, False), (1.0, True)):
        net, radius = designed_net(design, activation, s_out)
        assert bool(torch.isfinite(net.forward(x * radius)).all()) == finite, s_out
        assert bool(net.finite_bound(radius)[0]) == finite, s_out


def largest_logits(net: Ensemble, radius: float, seed: int = 0) -> torch.Tensor:
    """(K,) the largest 2-norm of a member's logits (float64) found on inputs of 2-norm radius:
    random directions, ± the top right singular vector of each member's product of weight
    matrices (blocks as I + α W_l), then 40 steps of projected gradient ascent from all."""
    gen = torch.Generator().manual_seed(seed)
    n_in, alpha = net.weights[0].shape[1], net.arch.alpha
    eye = torch.eye(net.weights[1].shape[1], dtype=torch.float64)
    starts = [torch.randn(64, n_in, generator=gen, dtype=torch.float64)]
    for i in range(net.size):
        prod = net.weights[0][i]
        for w in net.weights[1:-1]:
            prod = prod @ (eye + alpha * w[i])
        v = torch.linalg.svd(prod @ net.weights[-1][i]).U[:, 0]
        starts += [v[None], -v[None]]
    x = torch.cat(starts)
    for step in range(40):
        x = (x / torch.linalg.vector_norm(x, dim=1, keepdim=True) * radius).requires_grad_()
        grad, = torch.autograd.grad(net.forward(x).pow(2).sum(), x)
        x = x.detach() + radius * 0.2 / (1 + step) * torch.nn.functional.normalize(grad, dim=1)
    x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True) * radius
    with torch.no_grad():
        return torch.linalg.vector_norm(net.forward(x), dim=2).max(1).values


@pytest.mark.parametrize("activation", ["relu", "tanh", "linear", "abs"])
def test_the_norm_bound_bounds_the_logits(activation):
    """The bound's value is at least the largest logits found by an adversarial search on
    every net: the two designed ones (where a bound that is not the residual one falls far
    short) and random ones with random biases, α and scales from 1e-2 to 1e2."""
    torch.manual_seed(0)
    k = 6
    scale = torch.logspace(-2, 2, k, dtype=torch.float64).view(k, 1, 1)
    ws = [torch.randn(k, i, o, dtype=torch.float64) * scale
          for i, o in ((5, 8), (8, 8), (8, 8), (8, 3))]
    random = Ensemble(ws, [torch.randn(k, 1, w.shape[-1], dtype=torch.float64) for w in ws],
                      arch=Arch(True, activation, 0.7))
    skip, skip_radius = designed_net("skip", activation, 1.0, torch.float64)
    # alpha's inputs 1e-23 of its radius: the stream reaches ~1 only at the last block, so
    # tanh's logits too grow (1 + α)-fold per block (and a bound without α falls short)
    alpha, alpha_radius = designed_net("alpha", activation, 1.0, torch.float64)
    for net, radius in ((skip, skip_radius), (alpha, alpha_radius * 1e-23), (random, 3.0)):
        bound, ok = net.norm_bound(radius)
        assert ok.all()
        found = largest_logits(net, radius)
        assert (found <= bound).all(), (found, bound)
        assert (found > 0).all()
