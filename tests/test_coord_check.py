"""`milr coord-check`, μP's coordinate check on the engine itself: flat in width under μP
(SGD and Adam), growing in SP, and a μP rule broken on purpose (the readout left unscaled)
caught; the pre-activations it reads are the forward pass's own."""

import dataclasses
import json

import pytest
import torch

from milr.base.config import CoordConfig
from milr.engine import coord
from milr.engine.coord import TOLERANCE, coord_check, layer_names
from milr.engine.model import Arch, Ensemble, Layout

# Small and quick: 4 widths, 4 steps, 3 seeds on the 16-dimensional Gaussians (seconds).
SMALL = {"widths": "16,32,64,128", "seeds": 3, "device": "cpu"}
MUP = {"parametrization": "mup", "base_width": 16}


def slopes(check) -> dict:
    return {s.layer: s for s in check.slopes}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mup_is_flat_in_width(optimizer):
    check = coord_check(CoordConfig(**SMALL, **MUP, optimizer=optimizer))
    assert check.layers == ("input", "hidden 1", "output")
    for s in check.slopes:
        assert s.size is not None and s.change is not None, s
        assert s.size <= TOLERANCE and s.change <= TOLERANCE, s
    assert check.flagged == [] and check.verdict().startswith("passed")


@pytest.mark.parametrize("optimizer, lr, layer, what", [
    ("adam", None, "output", "change"),  # Adam's update of the logits grows as width^1
    ("adam", None, "hidden 1", "change"),
    ("sgd", None, "output", "change"),
    ("sgd", 1.0, "hidden 1", "size"),  # at a large rate the features themselves grow
])
def test_sp_grows_with_width(optimizer, lr, layer, what):
    check = coord_check(CoordConfig(**SMALL, optimizer=optimizer, lr=lr))
    assert getattr(slopes(check)[layer], what) > 2 * TOLERANCE
    assert layer in [s.layer for s in check.flagged]
    assert check.verdict().startswith("FAILED") and layer in check.verdict()


def unscaled_readout(monkeypatch):
    """Break μP on purpose: its output layer keeps SP's multiplier 1 and initial scale 1 (a
    readout that is not a MuReadout), every other rule of μP as it is."""
    right = Layout.of.__func__

    def broken(cls, cfg, n_in):
        layout = right(cls, cfg, n_in)
        return dataclasses.replace(layout, multipliers=(*layout.multipliers[:-1], 1.0),
                                   init_scales=(*layout.init_scales[:-1], 1.0))
    monkeypatch.setattr(Layout, "of", classmethod(broken))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_an_unscaled_readout_under_mup_is_caught(optimizer, monkeypatch):
    unscaled_readout(monkeypatch)
    check = coord_check(CoordConfig(**SMALL, **MUP, optimizer=optimizer))
    assert slopes(check)["output"].change > 2 * TOLERANCE
    assert "output" in [s.layer for s in check.flagged]


def test_depths_of_residual_nets():
    """Over depth: unscaled branches (α = 1) blow the stream up with depth, branches × 1/depth
    keep every layer flat; the four positions compared are the same at every depth."""
    common = {"depths": "2,4,8", "width": 32, "architecture": "residual", "seeds": 2,
              "device": "cpu"}
    bad = coord_check(CoordConfig(**common))
    good = coord_check(CoordConfig(**common, branch_scale="depth"))
    assert bad.layers == good.layers == ("input", "block 1", "last block", "output")
    assert {"last block", "output"} <= {s.layer for s in bad.flagged}
    assert good.flagged == [], good.verdict()
    # the stream at initialisation: α = 1 grows with depth, α = 1/depth does not
    assert bad.size[2][2][0] > 4 * bad.size[2][0][0]
    assert good.size[2][2][0] < 1.5 * good.size[2][0][0]


@pytest.mark.parametrize("arch", [Arch(), Arch(residual=True, alpha=0.5),
                                  Arch(activation="abs"), Arch(residual=True, activation="tanh")])
def test_preacts_are_the_forward_passes_own(arch):
    """What the check reads: every activation's argument, by hand, and the logits unchanged."""
    torch.manual_seed(1)
    depth = 3
    mults = (0.5, 2.0, 1.0, 0.25, 3.0)[:depth + arch.residual + 1]
    layout = dataclasses.replace(Layout.sp(depth + arch.residual), multipliers=mults)
    net = Ensemble.create([0, 1], 5, depth, 7, 3, arch=arch, dtype=torch.float64,
                          layout=layout)
    for b in net.biases:
        b.normal_()
    x = torch.randn(4, 5, dtype=torch.float64)
    phi = {"relu": torch.relu, "tanh": torch.tanh, "abs": torch.abs}[arch.activation]
    zs = []
    logits = net.forward(x, preacts=zs)
    h, want = x, []
    for layer, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        a = h if layer == 0 or not arch.residual else phi(want[-1])
        out = mults[layer] * torch.matmul(a, w) + b
        if layer == len(net.weights) - 1:
            break
        z = out if not arch.residual or layer == 0 else want[-1] + arch.alpha * out
        want.append(z)
        h = phi(z)
    assert len(zs) == len(want) == depth + arch.residual
    for got, expected in zip(zs, want, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logits, out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logits, net.forward(x), rtol=0, atol=0)


def test_layer_names_follow_the_network():
    assert layer_names(CoordConfig(depth=3).network(16)) == ["input", "hidden 1", "hidden 2",
                                                             "output"]
    residual = CoordConfig(depth=2, architecture="residual").network(16)
    assert layer_names(residual) == ["input", "block 1", "block 2", "output"]


def test_the_check_trains_as_training_does(tiny, monkeypatch):
    """After `steps` steps the check's members are the trainer's after the same steps: the
    rates, rule and minibatches of training (the trainer's own step), at the rate asked."""
    steps_seen = []
    real = coord.BatchedTrainer._step

    def spy(self):
        steps_seen.append((self.t.tolist(), self.lr.flatten().tolist()))
        return real(self)
    monkeypatch.setattr(coord.BatchedTrainer, "_step", spy)
    check = coord_check(CoordConfig(widths="8,16", steps=3, seeds=2, lr=0.05, device="cpu"),
                        data=tiny)
    assert steps_seen == [([t, t], [pytest.approx(0.05)] * 2) for _ in (8, 16) for t in range(3)]
    assert all(c[0] == 0.0 for layer in check.change for c in layer)  # nothing moved at t = 0
    assert all(c[-1] > 0 for layer in check.change for c in layer)


def test_overflow_fails_and_no_change_is_no_verdict():
    """A value that overflowed fails the check; a rate too small to move anything in float32
    leaves the slopes of change unread: no verdict, never a pass."""
    blown = coord_check(CoordConfig(**{**SMALL, "seeds": 1}, lr=1e30))
    assert all(s.status == "non-finite" and s.size is None for s in blown.slopes[1:])
    assert "overflowed" in blown.verdict() and not blown.passed
    still = coord_check(CoordConfig(**{**SMALL, "seeds": 1}, lr=1e-30))
    assert {s.status for s in still.slopes} == {"no change"}
    assert all(s.change is None and s.size is not None for s in still.slopes)
    assert still.verdict().startswith("no verdict") and not still.passed and not still.flagged


def test_cli_json_and_figure(run_milr, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "coord.pdf"
    code, stdout, err = run_milr(["coord-check", "--widths", "8,16", "--steps", "2",
                                  "--seeds", "1", "--device", "cpu", "--json",
                                  "--out", str(out)])
    doc = json.loads(stdout)
    assert code == (0 if doc["passed"] else 1), err
    assert doc["values"] == [8, 16] and doc["layers"] == ["input", "hidden 1", "output"]
    assert len(doc["size"]) == 3 and len(doc["size"][0]) == 2 and len(doc["size"][0][0]) == 3
    assert doc["lr"] == 0.1 and doc["config"]["optimizer"] == "sgd" and doc["plot"] == str(out)
    assert doc["passed"] == (doc["flagged"] == []) and doc["tolerance"] == TOLERANCE
    assert out.read_bytes()[:4] == b"%PDF"


def test_cli_table_names_the_failing_layers(run_milr):
    code, stdout, _ = run_milr(["coord-check", "--widths", "16,32,64,128", "--seeds", "3",
                                "--optimizer", "adam", "--device", "cpu"])
    assert code == 1  # a failed check exits 1, as a failing test does
    assert "FAILED" in stdout and "output grows" in stdout and "input grows" not in stdout
