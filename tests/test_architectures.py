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


class Plain(nn.Module):
    """The network as docs/protocol.md §2 defines it, written without milr's engine."""

    def __init__(self, cfg: EstimateConfig, n_in: int, classes: int):
        super().__init__()
        self.cfg, self.phi = cfg, PHI[cfg.activation]
        w, residual = cfg.width, cfg.architecture == "residual"
        self.first = nn.Linear(n_in, w)
        self.hidden = nn.ModuleList(nn.Linear(w, w) for _ in range(cfg.depth - (not residual)))
        self.out = nn.Linear(w, classes)
        self.alpha = ALPHA[cfg.branch_scale](cfg.depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.architecture == "mlp":
            h = self.phi(self.first(x))
            for lin in self.hidden:
                h = self.phi(lin(h))
            return self.out(h)
        h = self.first(x)
        for lin in self.hidden:
            h = h + self.alpha * lin(self.phi(h))
        return self.out(self.phi(h))

    def linears(self) -> list[nn.Linear]:
        return [self.first, *self.hidden, self.out]


def plain_net(cfg: EstimateConfig, data, seed: int) -> Plain:
    """At milr's initial weights for `seed` (nn.Linear holds them transposed), zero biases."""
    net = Plain(cfg, data.n_inputs, data.classes)
    layers = net.linears()
    ws = init_weights(seed, data.n_inputs, len(layers) - 1, cfg.width, data.classes,
                      cfg.output_init, cfg.activation)
    with torch.no_grad():
        for lin, w in zip(layers, ws, strict=True):
            lin.weight.copy_(w.T)
            lin.bias.zero_()
    return net.double()


def plain_losses(cfg: EstimateConfig, data, lr: float, seed: int) -> torch.Tensor:
    """The loss before each of the first STEPS steps of torch.optim on the plain network: the
    input layer at lr · input_lr_scale, the blocks at lr · depth^block_lr_depth_exponent, the
    output layer at lr · output_lr_scale."""
    net = plain_net(cfg, data, seed)
    block = cfg.depth ** cfg.block_lr_depth_exponent
    groups = [{"params": list(net.first.parameters()), "lr": lr * cfg.input_lr_scale},
              {"params": list(net.hidden.parameters()), "lr": lr * block},
              {"params": list(net.out.parameters()), "lr": lr * cfg.output_lr_scale}]
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


@pytest.mark.parametrize("activation", ["relu", "tanh", "linear", "abs"])
def test_the_finite_bound_holds_for_residual_nets(activation):
    """Where the bound says finite, outputs at inputs of the radius's norm are; wide weights
    of a residual net near float32's limit are not proven finite."""
    torch.manual_seed(0)
    ws = [torch.randn(3, 4, 8), torch.randn(3, 8, 8), torch.randn(3, 8, 8), torch.randn(3, 8, 2)]
    arch = Arch(True, activation, 0.5)
    net = Ensemble(ws, [torch.randn(3, 1, w.shape[-1]) for w in ws], arch=arch)
    x = torch.nn.functional.normalize(torch.randn(50, 4), dim=1) * 10.0
    assert net.finite_bound(10.0).all() and torch.isfinite(net.forward(x)).all()
    big = Ensemble([w * 1e9 for w in ws], net.biases, arch=arch)
    assert not big.finite_bound(10.0).any()
