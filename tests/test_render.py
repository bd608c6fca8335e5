from types import SimpleNamespace

import pytest
import torch

from milr.analysis.table import Cell
from milr.base.config import EstimateConfig
from milr.base.results import Estimate, SeedResult, stability_edge
from milr.cli.render import power, render_estimate, seeds_per_cell


@pytest.mark.parametrize("exponent, digits, shown", [
    (-0.7, 4, "^−0.7000"), (1.0, 4, "^1.0000"), (0.25, 3, "^0.250"),
    (-0.00001, 4, "^0.0000"),  # rounds to zero: no sign on a zero
])
def test_power_has_one_sign(exponent, digits, shown):
    assert power(exponent, digits) == shown


def test_seeds_per_cell_names_the_thin_cells():
    full = [Cell(d, w, 1.0, 1.0, 1.0, 3, 3) for d in (1, 2) for w in (8, 16)]
    thin = [Cell(4, 8, 1.0, 1.0, 1.0, 1, 3), Cell(4, 16, 1.0, 1.0, 1.0, 2, 3)]
    assert seeds_per_cell(full + thin) == "3 of 3 in 4 cells; 1 of 3 in (4, 8); 2 of 3 in (4, 16)"


def estimate_with_c(**kw) -> Estimate:
    """Two seeds with η* 0.5 and 1, λ1 4 and 6 (c 2 and 6), λ1_eff 2 and 3 (c_eff 1 and 3)."""
    seeds = [SeedResult(s, "ok", 0.5 * (s + 1), 0.4, 0.6, 5, 0) for s in (0, 1)]
    eff = [(None, SimpleNamespace(seed=s, lambda1=2.0 + s)) for s in (0, 1)]
    return Estimate(EstimateConfig(depth=1, width=8, **kw), seeds, [], 3, 1, "weighted", 1.0,
                    100, "cpu", lambda1={0: 4.0, 1: 6.0}, sharpness=eff)


@pytest.mark.parametrize("kw, edge", [
    ({}, "c_eff = 2 is the edge of stability of full-batch gradient descent"),
    ({"parametrization": "ntk"}, "c_eff = 2 is the edge of stability of full-batch gradient"),
    ({"parametrization": "mup", "base_width": 4}, "c_eff = 2 is the edge of stability"),
    ({"optimizer": "momentum"}, "c_eff = 3.8 is the edge of stability of full-batch heavy-ball "
                                "momentum: 2(1 + β), β = 0.9"),
    ({"optimizer": "nesterov", "momentum": 0.5}, "c_eff = 1.5 is the edge of stability of "
                                                 "full-batch Nesterov momentum"),
    ({"optimizer": "adam"}, None), ({"optimizer": "adamw"}, None),
    ({"parametrization": "mup", "base_width": 4, "optimizer": "adam"}, None),
    ({"weight_decay": 1e-4}, None),
])
def test_an_edge_of_stability_is_claimed_only_where_it_holds(kw, edge, capsys):
    """c and c_eff are both shown; an edge of stability is stated for c_eff, with the value
    of the optimizer's, and none under Adam or weight decay (it was "2" under every one)."""
    render_estimate(estimate_with_c(**kw))
    out = " ".join(capsys.readouterr().out.split())
    assert "c = η*·λ1 = 4 (median of 2 seed(s); range 2–6)" in out
    assert "c_eff = η*·λ1_eff = 2 (median of 2 seed(s); range 1–3)" in out
    if edge is None:
        assert "no edge of stability is claimed" in out and " is the edge" not in out
    else:
        assert edge in out and "claimed" not in out


@pytest.mark.parametrize("kw", [{}, {"optimizer": "momentum"}, {"optimizer": "nesterov"},
                                {"optimizer": "momentum", "momentum": 0.5},
                                {"optimizer": "nesterov", "momentum": 0.3}])
def test_the_edge_is_where_torch_optim_diverges_on_a_quadratic(kw):
    """On f(θ) = λ θ² / 2 torch.optim's SGD (heavy-ball, Nesterov) at rate η stays bounded
    just below η·λ = the edge stability_edge states and blows up just above it."""
    edge, _ = stability_edge(EstimateConfig(depth=1, width=8, **kw))
    opt = {"momentum": kw.get("momentum", 0.9), "nesterov": kw.get("optimizer") == "nesterov"} \
        if kw else {}

    def grows(rate: float) -> bool:
        p = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
        sgd = torch.optim.SGD([p], lr=rate / 3.0, **opt)  # λ = 3
        for _ in range(3000):
            sgd.zero_grad()
            (1.5 * p ** 2).sum().backward()
            sgd.step()
        return abs(p.item()) > 1

    assert not grows(edge * 0.999) and grows(edge * 1.001)


@pytest.mark.parametrize("edge, shown", [(None, False), (0, False), (2, True)])
def test_the_band_above_hi_is_shown_per_seed_and_said_once(edge, shown, capsys):
    seeds = [SeedResult(0, "ok", 0.5, 0.49, 0.51, 9, edge or 0, edge_trained=edge),
             SeedResult(1, "ok", 0.6, 0.59, 0.61, 9, 0, edge_trained=0)]
    render_estimate(Estimate(EstimateConfig(depth=1, width=8), seeds, [], 3, 1, "weighted",
                             1.0, 100, "cpu"))
    out = " ".join(capsys.readouterr().out.split())
    assert "trained above" in out and "failed below" not in out
    assert ("1 seed(s) also trained above hi (2 of 4 rates up to 1.25·hi): a chaotic edge"
            in out) == shown
