"""Optimizers, warm-up and parametrisations in the batched engine, held to torch.optim and to
Microsoft's `mup` package step by step (float64; under sp float32 too), and their options end
to end: config, CLI, grid, results file, memory check."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from milr.base.config import LR_RANGES, EstimateConfig
from milr.base.cost import memory_bytes
from milr.engine.model import Layout
from milr.engine.train import BatchedTrainer, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reference import make_net, optimiser, train_losses  # noqa: E402

STEPS = 20


def config(**kw) -> EstimateConfig:
    base = dict(depth=2, width=32, steps=200, batch_size=32, eval_every=30, threshold=0.75)
    return EstimateConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny64(tiny):
    return dataclasses.replace(tiny, x_train=tiny.x_train.double(), x_eval=tiny.x_eval.double())


def engine_losses(cfg: EstimateConfig, data, lrs: list[float], seeds: list[int],
                  steps: int = STEPS, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The loss before each of the first `steps` steps of every member (K, steps), trained in
    `dtype` (data of that dtype), as float64."""
    trainer = BatchedTrainer(cfg, data, dtype=dtype)
    trainer.admit(lrs, seeds)
    return torch.stack([trainer._step() for _ in range(steps)], 1).double()


def peer_losses(cfg: EstimateConfig, data, lrs: list[float], seeds: list[int],
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """engine_losses of the benchmarks' torch.func peer (float32 only)."""
    from funcpeer import FuncTrainer

    assert dtype == torch.float32
    trainer = FuncTrainer(cfg, data)
    trainer.admit(lrs, seeds)
    return torch.stack([trainer._run(1) for _ in range(STEPS)], 1).double()


def worst_relative_gap(cfg, data, lrs, seeds, dtype: torch.dtype = torch.float64,
                       losses=engine_losses) -> float:
    """The largest relative difference between the engine's (or `losses`') and the textbook's
    losses over every member and step, both trained in `dtype`."""
    engine = losses(cfg, data, lrs, seeds, dtype=dtype)
    worst = 0.0
    for k, (lr, seed) in enumerate(zip(lrs, seeds, strict=True)):
        ref = torch.tensor(train_losses(cfg, data, lr, seed, STEPS, dtype), dtype=torch.float64)
        worst = max(worst, float(((engine[k] - ref).abs() / ref.abs()).max()))
    return worst


SGD_LIKE = [("sgd", {}), ("sgd", {"weight_decay": 0.05}), ("momentum", {}),
            ("momentum", {"momentum": 0.5, "weight_decay": 0.01}), ("nesterov", {}),
            ("nesterov", {"weight_decay": 0.01})]
ADAM_LIKE = [("adam", {}), ("adam", {"beta1": 0.5, "beta2": 0.9, "eps": 1e-3,
                                     "weight_decay": 0.01}),
             ("adamw", {}), ("adamw", {"weight_decay": 0.1})]


# float64: to rounding; float32 (milr's default): to a few roundings, at most 3.0e-7 measured,
# where Adam's bias corrections computed in float32 instead of torch.optim's Python floats put
# the two 5e-6 apart.
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-6)])
@pytest.mark.parametrize("warmup", [0, 7])
@pytest.mark.parametrize("name, extra", SGD_LIKE + ADAM_LIKE)
def test_every_optimizer_follows_torch_optim_at_every_step(name, extra, warmup, dtype,
                                                           tolerance, tiny):
    """Two members (two rates, two seeds), 20 steps: the engine's losses are torch.optim's
    (with a LambdaLR warm-up), both trained in `dtype`."""
    data = dataclasses.replace(tiny, x_train=tiny.x_train.to(dtype),
                               x_eval=tiny.x_eval.to(dtype))
    cfg = config(optimizer=name, warmup_steps=warmup, output_lr_scale=0.5, **extra)
    lr = 0.3 if name in ("sgd", "momentum", "nesterov") else 3e-3
    assert worst_relative_gap(cfg, data, [lr, lr / 3], [0, 1], dtype) < tolerance


@pytest.mark.parametrize("output_init", ["fan-in", "he"])
@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw"])
def test_ntk_follows_its_textbook_at_every_step(name, output_init, tiny64):
    cfg = config(optimizer=name, parametrization="ntk", output_init=output_init)
    lr = 3.0 if name in ("sgd", "momentum") else 3e-3
    assert worst_relative_gap(cfg, tiny64, [lr, lr / 3], [0, 1]) < 1e-10


@pytest.mark.parametrize("width", [16, 64])  # below and above the base width
@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw"])
def test_mup_is_the_mup_package_at_every_step(name, width, tiny64):
    """An nn.Sequential with MuReadout, set_base_shapes and MuSGD / MuAdam (benchmarks/
    reference.py) gives the engine's loss at each of 20 steps, to 1e-14 relative in float64
    (at most 6.4e-16 measured), at a width below and one above the base width; with weight
    decay and warm-up too, which the package scales per parameter."""
    pytest.importorskip("mup")
    from mup import MuReadout

    cfg = config(optimizer=name, width=width, depth=3, parametrization="mup", base_width=32,
                 weight_decay=0.01, warmup_steps=5)
    net = make_net(cfg, tiny64, 0)
    assert isinstance(net[-1], MuReadout) and net[-1].width_mult() == width / 32
    assert all(hasattr(p, "infshape") for p in net.parameters())
    lr = 0.3 if name in ("sgd", "momentum") else 3e-3
    assert worst_relative_gap(cfg, tiny64, [lr, lr / 2], [0, 2]) < 1e-14
    # and μP is not SP there: the comparison would see the difference
    sp = engine_losses(dataclasses.replace(cfg, parametrization="sp", base_width=None),
                       tiny64, [lr], [0])
    mup = engine_losses(cfg, tiny64, [lr], [0])
    assert float(((sp - mup).abs() / mup.abs()).max()) > 1e-3


def test_mup_optimizers_split_the_groups_as_the_layout_says(tiny64):
    """The package's per-parameter rates (its param groups) are the engine's Layout rates."""
    pytest.importorskip("mup")
    for name in ("sgd", "adam"):
        cfg = config(optimizer=name, width=64, depth=3, parametrization="mup", base_width=16,
                     input_lr_scale=0.1, output_lr_scale=0.5)
        net = make_net(cfg, tiny64, 0)
        opt = optimiser(cfg, net, 1.0)
        rate = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        got = [rate[id(p)] for lin in linears for p in (lin.weight, lin.bias)]
        want = Layout.of(cfg, tiny64.n_inputs).parameter_lr_scales()
        assert got == pytest.approx(want, rel=1e-12), name


def test_mup_at_the_base_width_is_sp(tiny64):
    for name in ("sgd", "adam"):
        mup = config(optimizer=name, parametrization="mup", base_width=32)  # width 32
        sp = config(optimizer=name)
        assert Layout.of(mup, 16) == Layout.of(sp, 16)


def test_each_member_keeps_its_own_optimizer_state_and_step_count(tiny):
    """Adam with warm-up: members that join later, train beside others and are compacted away
    end exactly as when trained alone (per-member state, bias correction and warm-up)."""
    cfg = config(optimizer="adam", warmup_steps=20)
    lrs, seeds = [0.3, 0.03, 3e-3, 100.0], [0, 1, 2, 3]
    together = train(cfg, tiny, lrs, seeds)
    for lr, seed, out in zip(lrs, seeds, together, strict=True):
        assert train(cfg, tiny, [lr], [seed])[0] == out
    trainer = BatchedTrainer(cfg, tiny)
    trainer.admit([lrs[0]], [seeds[0]])
    trainer.advance()
    trainer.admit(lrs[1:], seeds[1:])  # joins after the first has run some steps
    out = {}
    while trainer.pending:
        out.update(trainer.advance())
    assert [out[k] for k in range(4)] == together


def test_warmup_scales_the_rate_linearly_to_its_peak(tiny64):
    """Under plain SGD the first step moves the weights by lr · min(1, 1 / N) · gradient."""
    for warmup, factor in ((0, 1.0), (1, 1.0), (4, 0.25)):
        cfg = config(warmup_steps=warmup)
        trainer = BatchedTrainer(cfg, tiny64, dtype=torch.float64)
        trainer.admit([0.2], [0])
        w0 = trainer.net.weights[1].clone()
        trainer._step()
        plain = BatchedTrainer(config(), tiny64, dtype=torch.float64)
        plain.admit([0.2 * factor], [0])
        plain._step()
        torch.testing.assert_close(trainer.net.weights[1], plain.net.weights[1], rtol=1e-12,
                                   atol=1e-14)
        assert not torch.equal(trainer.net.weights[1], w0)


def test_defaults_per_optimizer_and_unset_hyperparameters():
    for name, (lo, hi) in LR_RANGES.items():
        cfg = config(optimizer=name)
        assert (cfg.lr_min, cfg.lr_max) == (lo, hi)
    # Adam's floor two decades below SGD's, momentum's one (η* lies that much lower)
    assert LR_RANGES["adam"][0] <= LR_RANGES["sgd"][0] / 100
    assert LR_RANGES["momentum"][0] <= LR_RANGES["sgd"][0] / 10
    sgd, mom, adam = config(), config(optimizer="momentum"), config(optimizer="adam")
    assert (sgd.momentum, sgd.beta1, sgd.beta2, sgd.eps) == (None, None, None, None)
    assert (mom.momentum, mom.beta1) == (0.9, None)
    assert (adam.momentum, adam.beta1, adam.beta2, adam.eps) == (None, 0.9, 0.999, 1e-8)
    assert config(optimizer="adam", lr_min=1e-3).lr_min == 1e-3  # given values are kept


@pytest.mark.parametrize("kw, named", [
    ({"optimizer": "momentum", "momentum": -0.5}, "momentum"),
    ({"optimizer": "nesterov", "momentum": 1.0}, "momentum"),
    ({"momentum": 0.9}, "momentum applies to optimizer momentum and nesterov only"),
    ({"optimizer": "adam", "beta1": 1.0}, "beta1"),
    ({"optimizer": "adam", "beta2": 1.5}, "beta2"),
    ({"optimizer": "adamw", "beta2": -0.1}, "beta2"),
    ({"optimizer": "adam", "eps": 0.0}, "eps"),
    ({"optimizer": "momentum", "beta1": 0.9}, "beta1 applies to optimizer adam and adamw"),
    ({"weight_decay": -1e-4}, "weight_decay"),
    ({"warmup_steps": 201}, "warmup_steps (201) must not exceed steps (200)"),
    ({"warmup_steps": -1}, "warmup_steps"),
    ({"parametrization": "mup"}, "parametrization mup needs base_width"),
    ({"parametrization": "mup", "base_width": 0}, "base_width"),
    ({"parametrization": "mup", "base_width": -8}, "base_width"),
    ({"base_width": 16}, "base_width applies to parametrization mup only"),
    ({"parametrization": "ntk", "output_init": "zero"}, "ntk"),
    ({"output_lr_scale": 0.0}, "output_lr_scale"),
    ({"optimizer": "rmsprop"}, "optimizer"),
])
def test_bad_values_are_refused_by_name(kw, named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(")", r"\)")):
        config(**kw)


def test_the_memory_check_counts_the_optimizer_state():
    """Momentum keeps one copy of the weights per member, Adam two."""
    base = memory_bytes(config(), 784, 10, 8)
    weights = 784 * 32 + 32 * 32 + 32 * 10
    assert memory_bytes(config(optimizer="momentum"), 784, 10, 8) - base == 4 * 8 * weights
    assert memory_bytes(config(optimizer="adam"), 784, 10, 8) - base == 2 * 4 * 8 * weights


def test_estimate_takes_every_option_and_reports_it(run_milr):
    code, out, err = run_milr([
        "estimate", "--depth", "1", "--width", "8", "--seeds", "1", "--steps", "60",
        "--eval-every", "20", "--device", "cpu", "--optimizer", "adam", "--beta2", "0.99",
        "--warmup-steps", "10", "--parametrization", "mup", "--base-width", "4",
        "--weight-decay", "0.001", "--output-lr-scale", "0.5", "--max-rounds", "3", "--json"])
    assert code in (0, None), err
    c = json.loads(out)["config"]
    assert (c["optimizer"], c["beta1"], c["beta2"], c["eps"], c["momentum"]) == (
        "adam", 0.9, 0.99, 1e-8, None)
    assert (c["warmup_steps"], c["parametrization"], c["base_width"], c["weight_decay"],
            c["output_lr_scale"], c["lr_min"], c["lr_max"]) == (10, "mup", 4, 0.001, 0.5,
                                                                 1e-5, 0.1)


def test_sharpness_is_of_the_network_as_parametrised(run_milr):
    """ntk's network is sp's function, so λ1 differs only through the parameters it is
    differentiated against; the preconditioned λ1 under mup uses MuSGD's or MuAdam's rates."""
    def lam(*extra):
        code, out, err = run_milr(["sharpness", "--depth", "2", "--width", "16", "--seeds", "1",
                                   "--samples", "128", "--device", "cpu", "--json", *extra])
        assert code in (0, None), err
        return json.loads(out)["results"][0]["lambda1"]

    sp, ntk = lam(), lam("--parametrization", "ntk")
    assert ntk != pytest.approx(sp, rel=1e-2)
    mup = ["--parametrization", "mup", "--base-width", "4", "--preconditioned"]
    assert lam(*mup) != pytest.approx(lam(*mup, "--optimizer", "adam"), rel=1e-2)
    assert lam("--preconditioned") == pytest.approx(
        lam("--preconditioned", "--parametrization", "mup", "--base-width", "16"), rel=1e-6)


GRID = ("depths: [1]\nwidths: [8]\nseeds: 1\nsteps: 40\neval_every: 20\ndevice: cpu\n"
        "max_rounds: 2\n")


def test_a_grid_takes_every_key_and_its_rows_record_them(tmp_path):
    from milr.sweep.grid import parse_grid
    from milr.sweep.store import COLUMNS

    grid = parse_grid(GRID + "optimizer: nesterov\nmomentum: 0.8\nweight_decay: 0.0001\n"
                             "warmup_steps: 5\nparametrization: mup\nbase_width: 4\n"
                             "output_lr_scale: 2.0\n")
    cfg = grid.config(1, 8)
    assert (cfg.optimizer, cfg.momentum, cfg.warmup_steps, cfg.base_width,
            cfg.output_lr_scale, cfg.lr_max) == ("nesterov", 0.8, 5, 4, 2.0, 1.0)
    for key in ("optimizer", "momentum", "beta1", "beta2", "eps", "weight_decay",
                "warmup_steps", "parametrization", "base_width", "output_lr_scale"):
        assert key in COLUMNS
    with pytest.raises(ValueError, match="line 8.*momentum"):
        parse_grid(GRID + "momentum: 0.9\n")  # sgd has no momentum: the key's line is named


def test_an_old_results_file_reads_as_sgd_sp_without_warmup(tmp_path):
    """A file written before these columns existed reads with the values it implied, resumes
    under them, and is refused, by name, for a grid that changes one."""
    from milr.sweep.grid import parse_grid
    from milr.sweep.store import COLUMNS, LEGACY_VALUES, ResultStore, StoreError

    new = ("optimizer", "momentum", "beta1", "beta2", "eps", "weight_decay", "warmup_steps",
           "parametrization", "base_width", "output_lr_scale")
    grid = parse_grid(GRID)
    row = {**{c: "" for c in COLUMNS}, **{k: str(v if v is not None else "") for k, v in
                                          grid.config(1, 8).row().items()},
           "seed": "0", "status": "ok"}
    old_columns = [c for c in COLUMNS if c not in new]
    path = tmp_path / "old.csv"
    path.write_text(",".join(old_columns) + "\n" + ",".join(row[c] for c in old_columns) + "\n")
    store = ResultStore(path)
    rows = store.rows()
    assert {k: rows[0][k] for k in new} == {k: LEGACY_VALUES[k] for k in new}
    assert (rows[0]["optimizer"], rows[0]["parametrization"], rows[0]["warmup_steps"]) == (
        "sgd", "sp", "0")
    store.check_compatible(rows, grid.config(*grid.cells[0]))  # today's defaults: the same
    for extra, name in (("optimizer: adam\n", "optimizer"), ("warmup_steps: 10\n",
                                                             "warmup_steps"),
                        ("parametrization: ntk\n", "parametrization")):
        with pytest.raises(StoreError, match=f"no {name} column"):
            g = parse_grid(GRID + extra)
            store.check_compatible(rows, g.config(*g.cells[0]))


@pytest.mark.parametrize("name, extra", [("momentum", {}), ("adam", {}),
                                         ("adamw", {"weight_decay": 0.1})])
def test_the_torch_func_peer_follows_torch_optim_in_float32(name, extra, tiny):
    """The peer's losses, warm-up included, are torch.optim's to a few float32 roundings (at
    most 2.3e-7 measured; 4.9e-6 under Adam while it computed the bias corrections in
    float32)."""
    cfg = config(optimizer=name, warmup_steps=7, output_lr_scale=0.5, **extra)
    lr = 0.3 if name == "momentum" else 3e-3
    assert worst_relative_gap(cfg, tiny, [lr, lr / 3], [0, 1], torch.float32,
                              peer_losses) < 1e-6


@pytest.mark.parametrize("kw, rates", [
    ({"optimizer": "momentum", "output_lr_scale": 0.5}, (0.1, 0.3, 1e3)),
    ({"optimizer": "nesterov", "weight_decay": 0.01}, (0.1, 0.3, 1e3)),
    ({"optimizer": "adamw", "weight_decay": 0.1}, (0.01, 0.1, 100.0)),
    ({"optimizer": "adam", "warmup_steps": 40}, (0.01, 0.1, 1e4)),
])
def test_the_torch_func_peer_trains_with_the_same_optimizer(kw, rates, tiny):
    """The benchmarks' torch.func peer (benchmarks/funcpeer.py) gets the same optimizer and
    warm-up: its verdicts and stopping steps are the engine's on members that are not chaotic."""
    from funcpeer import train_func

    cfg = config(**kw)
    lrs = [r for r in rates for _ in range(3)]
    seeds = [s for _ in rates for s in range(3)]
    engine = [(o.success, o.diverged, o.steps) for o in train(cfg, tiny, lrs, seeds)]
    peer = [(r.success, r.diverged, r.steps) for r in train_func(cfg, tiny, lrs, seeds)]
    assert peer == engine
    assert {s for s, _, _ in engine} == {True, False}


def test_below_range_names_the_option_and_its_value(run_milr):
    """A seed that ends below_range is told which option to change, with the value in force
    (its default depends on the optimizer)."""
    code, out, err = run_milr(["estimate", "--depth", "1", "--width", "4", "--seeds", "1",
                               "--steps", "20", "--eval-every", "10", "--device", "cpu",
                               "--optimizer", "adam", "--lr-min", "3", "--lr-max", "10",
                               "--widen", "1"])
    assert code in (0, None), err
    text = " ".join(out.split())
    assert "below_range" in text and "lower --lr-min, 3 here" in text
    assert "default depends on --optimizer" in text
    assert "adam (β 0.9, 0.999, ε 1e-08)" in text  # the protocol line names the optimizer
