import math

import pytest

from milr import EstimateConfig
from milr.base.seeding import batch_schedule
from milr.engine.train import BatchedTrainer, train


def cfg(**kw):
    base = dict(depth=2, width=16, steps=200, eval_every=20, batch_size=32, input_lr_scale=1.0,
                threshold=0.75)
    return EstimateConfig(**{**base, **kw})


def test_member_alone_equals_member_in_batch_of_16(tiny):
    c = cfg()
    lrs = [0.02 * 1.5**i for i in range(16)]
    seeds = [i % 3 for i in range(16)]
    batch = train(c, tiny, lrs, seeds)
    for i in (0, 5, 11, 15):
        alone = train(c, tiny, [lrs[i]], [seeds[i]])[0]
        assert alone == batch[i]


def test_outcomes_cover_slow_good_and_diverging(tiny):
    out = train(cfg(), tiny, [1e-4, 0.3, 1e4], [0, 0, 0])
    slow, good, wild = out
    assert not slow.success and not slow.diverged and slow.steps == 200
    assert good.success and good.final_acc >= 0.75 and good.steps < 200
    assert good.steps % 20 == 0  # success is only declared at an evaluation
    assert wild.diverged and not wild.success and wild.steps == 20  # caught at the first eval
    assert wild.final_acc is None and slow.final_acc is not None  # a diverged run is not evaluated


def test_nonfinite_loss_stops_a_member_before_the_evaluation(tiny):
    lrs, seeds = [1e20, 1e8, 0.3, 0.02], [0, 2, 0, 1]
    early = train(cfg(), tiny, lrs, seeds)
    assert [o.steps for o in early[:2]] == [10, 10]  # nonfinite_every, not the evaluation at 20
    assert all(o.diverged and not o.success and o.final_acc is None for o in early[:2])
    assert not math.isfinite(early[0].final_loss)
    late = train(cfg(nonfinite_every=20), tiny, lrs, seeds)  # checked only at evaluations
    assert [o.steps for o in late[:2]] == [20, 20]
    assert [(o.success, o.diverged) for o in late] == [(o.success, o.diverged) for o in early]
    assert early[2:] == late[2:]  # the others are untouched by the early exit


def test_divergence_needs_finite_loss(tiny):
    wild = train(cfg(), tiny, [1e4], [1])[0]
    assert wild.diverged and not (math.isfinite(wild.final_loss) and wild.final_loss < 1)


def test_success_stops_member_early_but_not_others(tiny):
    out = train(cfg(threshold=0.7), tiny, [0.5, 1e-3], [0, 0])
    assert out[0].success and out[0].steps < 200
    assert out[1].steps == 200  # the slow member kept training after its neighbour left


def test_same_seed_same_lr_reproducible(tiny):
    assert train(cfg(), tiny, [0.1], [4]) == train(cfg(), tiny, [0.1], [4])
    assert train(cfg(), tiny, [0.1], [4]) != train(cfg(), tiny, [0.1], [5])


def test_batch_schedule_covers_each_epoch_once():
    s = batch_schedule(0, n=10, steps=5, batch=4)  # 20 indices = two epochs
    flat = s.flatten().tolist()
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert s.tolist() == batch_schedule(0, 10, 5, 4).tolist()


def test_input_layer_scale_changes_the_run(tiny):
    a = train(cfg(input_lr_scale=1.0), tiny, [0.2], [0])[0]
    b = train(cfg(input_lr_scale=1e-3), tiny, [0.2], [0])[0]
    assert a != b


@pytest.mark.parametrize("bad", [dict(depth=0), dict(width=-3), dict(threshold=1.5),
                                 dict(lr_min=1.0, lr_max=0.5), dict(midpoint="middle")])
def test_config_rejects(bad):
    with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
        cfg(**bad)


def test_success_cancels_smaller_rates_of_the_same_seed_only(tiny):
    lrs, seeds = [0.5, 0.05, 1e-3, 1e-3], [0, 0, 0, 1]
    plain = train(cfg(threshold=0.7), tiny, lrs, seeds)
    pruned = train(cfg(threshold=0.7), tiny, lrs, seeds, cancel_dominated=True)
    assert pruned[0] == plain[0] and pruned[0].success
    assert pruned[2].cancelled and not pruned[2].success and pruned[2].steps < plain[2].steps
    assert pruned[3] == plain[3] and not pruned[3].cancelled  # another seed: untouched
    assert not any(o.cancelled for o in plain)


def test_member_joining_a_running_pool_equals_member_alone(tiny):
    c = cfg(threshold=0.7)
    pool = BatchedTrainer(c, tiny)
    first = pool.admit([0.05, 0.5], [0, 1])
    out = dict(pool.advance() + pool.advance() + pool.advance())  # 30 steps, eval at 20
    late = pool.admit([0.3, 1e20], [2, 0])  # joins mid-run, off the others' evaluation steps
    while pool.pending:
        out.update(pool.advance())
    for key, lr, seed in zip(first + late, [0.05, 0.5, 0.3, 1e20], [0, 1, 2, 0], strict=True):
        assert repr(out[key]) == repr(train(c, tiny, [lr], [seed])[0])  # repr: nan == nan
    assert out[late[1]].diverged and out[late[1]].steps == 10


def test_curves_of_known_trials_under_accuracy(tiny):
    slow, good, wild = train(cfg(), tiny, [1e-4, 0.3, 1e4], [0, 0, 0])
    assert slow.curve_steps == tuple(range(20, 201, 20))  # every evaluation, to the budget
    assert len(slow.curve_acc) == len(slow.curve_loss) == 10
    assert max(slow.curve_acc) < 0.75 and slow.curve_acc[-1] == slow.final_acc
    assert good.curve_steps == tuple(range(20, good.steps + 1, 20))  # ends where it stopped
    assert good.curve_acc[-1] == good.final_acc >= 0.75 > max(good.curve_acc[:-1], default=0)
    assert good.curve_loss[-1] == good.final_loss and good.peak_acc == max(good.curve_acc)
    assert wild.curve_steps == (20,) and wild.curve_acc == (None,)  # diverged: not evaluated
    assert wild.curve_loss == (wild.final_loss,)
    assert all(o.max_loss is None and o.max_loss_step is None for o in (slow, good, wild))


def test_curves_and_largest_loss_under_stable_and_the_step_check(tiny):
    c = cfg(criterion="stable", threshold=None, divergence_check="step")
    ok, wild = train(c, tiny, [0.3, 1e4], [0, 0])
    assert ok.success and ok.curve_steps == tuple(range(20, 201, 20))
    assert ok.curve_acc == (None,) * 10  # stable evaluates nothing
    assert ok.max_loss >= max(ok.curve_loss) and 1 <= ok.max_loss_step <= 200
    assert wild.diverged and wild.steps == 10 and wild.curve_steps == ()  # before any point
    assert 1 <= wild.max_loss_step <= 10 and wild.max_loss > 10 * ok.max_loss
    strict = train(cfg(divergence_check="step"), tiny, [1e4], [0])[0]
    assert strict.max_loss == wild.max_loss and strict.max_loss_step == wild.max_loss_step
