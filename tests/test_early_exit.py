"""The exact early exit of an evaluation: it may stop looking at validation examples once the
verdict is certain, and must never change a verdict, a stopping step or a divergence."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from milr.base.config import EstimateConfig
from milr.data.formats import Dataset
from milr.engine.estimation import estimate
from milr.engine.model import Ensemble, eval_chunks
from milr.engine.train import needed, train

RATES = (0.01, 0.3, 1.0, 2.0, 5.0, 15.0, 40.0, 1e3)


def config(**kw) -> EstimateConfig:
    return EstimateConfig(**{**dict(depth=2, width=32, steps=200, batch_size=32, eval_every=30,
                                    threshold=0.75), **kw})


def run(tiny, full_eval: bool, **kw):
    members = [(lr, s) for lr in RATES for s in range(3)]
    return train(config(**kw), tiny, [lr for lr, _ in members], [s for _, s in members],
                 full_eval=full_eval, eval_chunk=16)


@pytest.mark.parametrize("kw", [{}, {"optimizer": "adam"}, {"parametrization": "ntk"}])
def test_early_exit_changes_no_verdict_step_or_loss(tiny, kw):
    """Against full evaluations: every member ends the same way at the same step with the same
    losses, a full evaluation's accuracy is the same number, and a partial one lies on the side
    of the threshold that its verdict says."""
    n = len(tiny.y_eval)
    early, full = run(tiny, False, **kw), run(tiny, True, **kw)
    partial = 0
    for e, f in zip(early, full, strict=True):
        same = ("success", "diverged", "steps", "final_loss", "curve_steps", "curve_loss")
        assert repr([getattr(e, k) for k in same]) == repr([getattr(f, k) for k in same])  # nan too
        assert all(s in (0, n) for s in f.curve_seen)
        for a, s, fa in zip(e.curve_acc, e.curve_seen, f.curve_acc, strict=True):
            if s == n or a is None:
                assert a == fa
            else:
                partial += 1
                assert (a >= 0.75) == (fa >= 0.75)
    assert partial > 0  # the exit happened


@pytest.mark.parametrize("n, threshold, need", [
    (10_000, 0.9, 9000),  # float32 9000 / 10000 lies below 0.9: it needed 9001
    (10, 0.7, 7),  # likewise 7 / 10: it needed 8
    (10_000, 0.925, 9250), (10_000, 0.34, 3400), (100, 0.75, 75),  # the paper's, tiny's
    (7, 0.8, 6), (3, 0.3333333333333333, 1),  # 5.6 up to 6; 3 · 0.333... is just under 1
    (2000, 0.799999999, 1600), (2000, 0.800000001, 1601),  # a hair either side of 1600
    (10, 0.99, 10), (1, 0.5, 1), (0, 0.5, 1),  # none of 0 examples meets anything
])
def test_needed_is_the_exact_count(n, threshold, need):
    """The fewest correct answers out of n that reach the threshold, worked out by hand."""
    assert needed(n, threshold) == need


def test_a_member_whose_outputs_may_overflow_is_evaluated_fully():
    """An overflow that only the last examples reach must still show as non-finite outputs:
    the bound refuses to prove finiteness there, so the member sees every example; trusting
    an early exit without it would miss the overflow."""
    torch.manual_seed(0)
    net = Ensemble([torch.randn(1, 4, 8), torch.randn(1, 8, 2)],
                   [torch.zeros(1, 1, 8), torch.zeros(1, 1, 2)])
    x = torch.randn(40, 4)
    x[-1] = 1e38  # only the last example overflows
    y = net.forward(x[:-1]).argmax(-1)[0]
    y = torch.cat([y, torch.zeros(1, dtype=torch.long)])  # every answer right but the last
    radius = float(torch.linalg.vector_norm(x.double(), dim=1).max())
    may_stop = net.finite_bound(radius)
    assert not bool(may_stop[0])
    correct, seen, finite = net.evaluate(x, y, 8, need=20, may_stop=may_stop)
    assert (int(seen[0]), bool(finite[0])) == (40, False)
    _, seen, finite = net.evaluate(x, y, 8, need=20, may_stop=torch.tensor([True]))
    assert (int(seen[0]), bool(finite[0])) == (24, True)  # the unsound exit misses it


def test_the_finiteness_bound_is_sound_and_not_vacuous():
    """Wherever the bound says finite, the outputs are, even for inputs chosen to be as large
    as the radius allows along each network's most amplified direction; with ordinary weights
    it does prove finiteness, and a non-finite weight never does."""
    torch.manual_seed(1)
    k = 8
    scale = torch.logspace(0, 12, k).view(k, 1, 1)
    ws = [torch.randn(k, 16, 64) * scale, torch.randn(k, 64, 64) * scale,
          torch.randn(k, 64, 3) * scale]
    net = Ensemble(ws, [torch.randn(k, 1, w.shape[-1]) for w in ws])
    radius = 1e3
    ok = net.finite_bound(radius)
    assert bool(ok[0]) and not bool(ok.all())
    for i in range(k):
        # the input direction the first layer amplifies most, at full radius
        v = torch.linalg.svd(ws[0][i].double()).U[:, 0].float()
        out = net.select(torch.tensor([i])).forward(torch.stack([v, -v]) * radius)
        if ok[i]:
            assert bool(torch.isfinite(out).all()), i
    broken = Ensemble([w[:1].clone() for w in ws], [torch.zeros(1, 1, w.shape[-1]) for w in ws])
    broken.weights[1][0, 3, 5] = float("nan")
    assert not bool(broken.finite_bound(1.0)[0])


def test_full_evaluations_record_the_full_accuracy(tiny):
    """full_eval: every evaluation that ran saw every example, and the accuracies are those of a
    plain evaluation of the whole set."""
    out = run(tiny, True)
    n = len(tiny.y_eval)
    seen = {s for o in out for s, a in zip(o.curve_seen, o.curve_acc, strict=True)
            if a is not None}
    assert seen == {n}
    assert dataclasses.asdict(out[0])["curve_seen"]  # recorded in the outcome


def test_by_default_evaluations_are_full_on_cuda_only(tiny, monkeypatch):
    """Unset, full_eval is True on CUDA (where the early exit has not been measured to pay)
    and False elsewhere: on the CPU an evaluation stops once its verdict is certain."""
    import milr.engine.estimation as est_mod
    from milr.engine.estimation import full_eval_by_default

    assert full_eval_by_default("cuda") and not full_eval_by_default("cpu")
    built = []

    class Spy(est_mod.BatchedTrainer):
        def __init__(self, *a, **kw):
            built.append(kw["full_eval"])
            super().__init__(*a, **kw)

    monkeypatch.setattr(est_mod, "BatchedTrainer", Spy)
    estimate(config(seeds=1, device="cpu"), tiny)
    estimate(config(seeds=1, device="cpu"), tiny, full_eval=True)
    assert built == [False, True]


def test_full_eval_with_a_trainer_of_ones_own_is_refused(tiny):
    """estimate's full_eval builds the default trainer: beside a trainer given it would be
    silently dropped, so the pair is refused by name before anything trains."""
    class Untouched:
        pending = 0

        def admit(self, lrs, seeds):
            raise AssertionError("trained")

        advance = admit

    with pytest.raises(ValueError, match="full_eval=True .* not to the trainer given"):
        estimate(config(), tiny, trainer=Untouched(), full_eval=True)


@pytest.mark.parametrize("n", [10_000, 10_001, 10_003, 1025, 4097, 100])
def test_finer_chunks_give_the_logits_of_the_old_ones_bit_for_bit(n):
    """An evaluation in chunks of 1024 (eval_chunks) sees every example's logits exactly as
    in chunks of 4096: a CPU matmul's last bits depend on whether the rows around a row come
    in multiples of 4, and plain chunks of 1024 would move rows across such boundaries."""
    torch.manual_seed(0)
    net = Ensemble.create([0, 1, 2, 3], 784, 2, 128, 10)
    x = torch.randn(n, 784)
    old = torch.cat([net.forward(x[i : i + 4096]) for i in range(0, n, 4096)], 1)
    new = torch.cat([net.forward(x[i:j]) for i, j in eval_chunks(n, 1024)], 1)
    assert torch.equal(old, new)
    spans = eval_chunks(n, 1024)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    with pytest.raises(ValueError, match="multiple of 4"):
        eval_chunks(n, 1000)


def test_an_empty_validation_set_never_succeeds(tiny):
    """No examples: no accuracy to reach (as before the early exit), and no crash."""
    empty = Dataset(tiny.name, tiny.x_train, tiny.y_train, tiny.x_eval[:0], tiny.y_eval[:0],
                    tiny.classes)
    for full in (False, True):
        out = train(config(steps=60), empty, [0.3], [0], full_eval=full)[0]
        assert not out.success and out.steps == 60
