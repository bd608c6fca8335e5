"""The protocol options: loss, criterion, divergence check and output initialisation."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from milr import EstimateConfig, estimate
from milr.cli import app
from milr.engine.model import Ensemble, init_weights
from milr.engine.train import train
from milr.sweep.grid import parse_grid
from milr.sweep.run import run_sweep


def cfg(**kw):
    base = dict(depth=2, width=16, steps=200, eval_every=20, batch_size=32, input_lr_scale=1.0,
                threshold=0.75)
    return EstimateConfig(**{**base, **kw})


def test_strict_check_fails_a_run_that_the_evaluation_rule_accepts(tiny):
    lrs = [0.05 * 1.3**i for i in range(16)]
    lenient = train(cfg(divergence_factor=2.0), tiny, lrs, [0] * 16)
    strict = train(cfg(divergence_factor=2.0, divergence_check="step"), tiny, lrs, [0] * 16)
    # the loss spiked above twice its initial value between evaluations and recovered
    flipped = [(a, b) for a, b in zip(lenient, strict, strict=True) if a.success != b.success]
    assert flipped and all(a.success and b.diverged for a, b in flipped)
    for a, b in zip(lenient, strict, strict=True):  # strict accepts nothing the rule rejects
        assert not b.success or (a.success and a.steps == b.steps)


def test_stable_never_looks_at_accuracy(tiny, monkeypatch):
    def no_accuracy(*args, **kwargs):
        raise AssertionError("stable evaluated accuracy")

    monkeypatch.setattr(Ensemble, "evaluate", no_accuracy)
    c = cfg(threshold=None, criterion="stable", steps=60)
    assert c.threshold is None and c.divergence_check == "step"
    slow, wild = train(c, tiny, [1e-4, 1e4], [0, 0])
    assert slow.success and slow.steps == 60 and slow.final_acc is None  # whole budget
    assert wild.diverged and not wild.success and wild.steps < 60
    with pytest.raises(ValueError, match="criterion stable has no threshold"):
        cfg(criterion="stable")


def test_stable_fails_an_overflow_in_the_last_update(tiny):
    c = dict(threshold=None, criterion="stable", nonfinite_every=1, steps=200)
    lr = next(lr for lr in (3.0, 5.0, 10.0, 30.0)
              if train(cfg(**c), tiny, [lr], [0])[0].diverged)
    first_bad = train(cfg(**c), tiny, [lr], [0])[0].steps  # the loss of this step was bad
    assert first_bad > 1
    # A budget that ends just before that step: only the loss after the last update shows it.
    out = train(cfg(**{**c, "steps": first_bad - 1}), tiny, [lr], [0])[0]
    assert out.diverged and not out.success and out.steps == first_bad - 1


@pytest.mark.parametrize("loss, expected", [("ce", math.log(2)), ("mse", 0.5 / 2)])
def test_zero_output_layer_starts_at_the_loss_of_zero_outputs(tiny, loss, expected):
    ws = init_weights(0, tiny.n_inputs, 2, 16, tiny.classes, output_init="zero")
    assert not ws[-1].any() and ws[0].any()
    he = init_weights(0, tiny.n_inputs, 2, 16, tiny.classes, output_init="he")
    fan_in = init_weights(0, tiny.n_inputs, 2, 16, tiny.classes)
    torch.testing.assert_close(he[-1], fan_in[-1] * 2**0.5)  # same draw, twice the variance
    assert torch.equal(he[0], fan_in[0])
    net = Ensemble.create([0], tiny.n_inputs, 2, 16, tiny.classes, output_init="zero")
    x, y = tiny.x_train[:32][None], tiny.y_train[:32][None]
    first = net.sgd_step(x, y, [torch.full((1, 1, 1), 0.1)] * 3, loss)
    assert first.item() == pytest.approx(expected, rel=1e-6)


def test_mse_gradient_equals_autograd():
    torch.manual_seed(0)
    k, b, n_in, classes = 3, 8, 5, 4
    net = Ensemble.create([0, 1, 1], n_in, depth=3, width=7, classes=classes)
    for bias in net.biases:
        bias.normal_()
    ref = [p.clone().requires_grad_() for p in net.weights + net.biases]
    x, y = torch.randn(k, b, n_in), torch.randint(0, classes, (k, b))
    lr = torch.tensor([0.1, 0.5, 2.0]).view(k, 1, 1)
    lrs = [lr * 0.3] + [lr] * 3
    loss = net.sgd_step(x, y, lrs, "mse")
    h, nw = x, len(net.weights)
    for i in range(nw):  # the network and the loss written out here, with autograd
        h = torch.baddbmm(ref[nw + i], h, ref[i])
        h = torch.relu(h) if i < nw - 1 else h
    onehot = torch.nn.functional.one_hot(y, classes).float()
    per_member = 0.5 * ((h - onehot) ** 2).sum(-1).sum(-1) / (b * classes)
    per_member.sum().backward()
    torch.testing.assert_close(loss, per_member.detach())
    for i, p in enumerate(net.weights + net.biases):
        torch.testing.assert_close(p, ref[i].detach() - lrs[i % nw] * ref[i].grad,
                                   rtol=1e-5, atol=1e-6)


GRID = """\
depths: [1]
widths: [8]
seeds: 1
dataset: gaussians
steps: 60
eval_every: 20
rtol: 0.5
device: cpu
"""


@pytest.mark.parametrize("extra, name", [("criterion: stable\n", "criterion"),
                                         ("loss: mse\n", "loss"),
                                         ("divergence_check: step\n", "divergence_check"),
                                         ("output_init: zero\n", "output_init")])
def test_a_results_file_of_one_protocol_refuses_another(tmp_path, extra, name):
    out = tmp_path / "r.csv"
    run_sweep(parse_grid(GRID), out)
    with pytest.raises(ValueError, match=name):
        run_sweep(parse_grid(GRID + extra), out)


def test_protocol_options_reach_every_row_and_the_json(tmp_path):
    grid = parse_grid(GRID + "criterion: stable\nloss: mse\noutput_init: he\n")
    rows = run_sweep(grid, tmp_path / "r.csv").rows
    assert {(r["criterion"], r["loss"], r["output_init"], r["divergence_check"], r["threshold"])
            for r in rows} == {("stable", "mse", "he", "step", "")}
    res = CliRunner().invoke(app, ["estimate", "--depth", "1", "--width", "8", "--steps", "60",
                                   "--seeds", "1", "--criterion", "stable", "--loss", "mse",
                                   "--output-init", "zero", "--rtol", "0.5", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert (doc["config"]["loss"], doc["config"]["criterion"], doc["config"]["output_init"],
            doc["config"]["divergence_check"]) == ("mse", "stable", "zero", "step")
    assert all(t["final_acc"] is None and t["peak_acc"] is None for t in doc["trials"])


def test_estimate_reports_c_from_lambda1(tiny):
    c = cfg(seeds=2, rtol=0.3)
    est = estimate(c, tiny, lambda1_samples=128)
    assert set(est.lambda1) == {0, 1} and all(v > 0 for v in est.lambda1.values())
    assert est.c == {s.seed: s.lr_star * est.lambda1[s.seed] for s in est.seeds}
    assert min(est.c.values()) <= est.c_median <= max(est.c.values())
    doc = est.to_dict()
    assert doc["c_median"] == est.c_median and set(doc["lambda1"]) == {0, 1}
