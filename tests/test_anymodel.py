"""η* of any PyTorch model (`--model`, engine/func.py), held to the textbook: a plain loop of the
factory's module with torch.optim, and the built-in engine on the same MLP."""

import copy
import dataclasses
import hashlib
import math
from pathlib import Path

import pytest
import torch

from milr.base.config import EstimateConfig, NetworkConfig, SharpnessConfig
from milr.base.seeding import batch_schedule
from milr.base.spec import identities
from milr.data.formats import Dataset, gaussians
from milr.engine.func import Factory, FuncTrainer
from milr.engine.model import loss_value
from milr.engine.sharpness import sharpness
from milr.engine.train import BatchedTrainer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
F64 = torch.float64


def shaped(data: Dataset, shape: tuple[int, ...]) -> Dataset:
    """`data` whose inputs the model receives in `shape` (a data set's in_shape)."""
    if "in_shape" in {f.name for f in dataclasses.fields(Dataset)}:
        return dataclasses.replace(data, in_shape=shape)
    out = copy.copy(data)
    object.__setattr__(out, "in_shape", shape)
    return out


@pytest.fixture(scope="module")
def flat() -> Dataset:
    """Small two-Gaussian data in float64, 16 features."""
    d = gaussians(seed=1, dim=16, n_train=128, n_eval=48)
    return Dataset(d.name, d.x_train.double(), d.y_train, d.x_eval.double(), d.y_eval,
                   d.classes)


@pytest.fixture(scope="module")
def images() -> Dataset:
    """The same kind of data as 1 × 8 × 8 images."""
    d = gaussians(seed=2, dim=64, n_train=128, n_eval=48)
    return shaped(Dataset(d.name, d.x_train.double(), d.y_train, d.x_eval.double(), d.y_eval,
                          d.classes), (1, 8, 8))


def config(model: str | None, **kw) -> EstimateConfig:
    base = dict(depth=1, width=4, steps=20, eval_every=1, batch_size=8, criterion="stable",
                nonfinite_every=1, device="cpu", model=model)
    return EstimateConfig(**{**base, **kw})


def engine_runs(cfg: EstimateConfig, data: Dataset, lrs, seeds, trainer=FuncTrainer):
    """Outcomes of one stack of members trained together (float64)."""
    t = trainer(cfg, data, dtype=F64)
    keys = t.admit(list(lrs), list(seeds))
    out = {}
    while t.pending:
        out.update(t.advance())
    return [out[k] for k in keys]


OPTIMIZERS = {  # cfg fields -> the torch.optim optimizer they mean
    "sgd": ({}, lambda p, lr: torch.optim.SGD(p, lr)),
    "momentum": ({"optimizer": "momentum", "weight_decay": 0.01},
                 lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9, weight_decay=0.01)),
    "adam": ({"optimizer": "adam"}, lambda p, lr: torch.optim.Adam(p, lr)),
    "adamw": ({"optimizer": "adamw", "weight_decay": 0.1, "warmup_steps": 5},
              lambda p, lr: torch.optim.AdamW(p, lr, weight_decay=0.1)),
}


def textbook(cfg: EstimateConfig, data: Dataset, lr: float, seed: int, make_opt):
    """A plain loop: the factory's module built as milr builds it, torch.optim, the seed's
    batches; the loss of every step (before its update) and the module afterwards."""
    module = Factory.of(cfg, data).build(seed).to(F64).train()
    opt = make_opt(module.parameters(), lr)
    warm = cfg.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / warm)) \
        if warm else None
    order = batch_schedule(seed, len(data.x_train), cfg.steps + 1, cfg.batch_size)
    shape = getattr(data, "in_shape", None) or (data.n_inputs,)
    losses = []
    for t in range(cfg.steps):
        x, y = data.x_train[order[t]], data.y_train[order[t]]
        loss = loss_value(module(x.reshape(len(x), *shape))[None], y[None], cfg.loss)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched:
            sched.step()
        losses.append(loss.item())
    return losses, module


CASES = [("mlp.py", "flat", name) for name in OPTIMIZERS] + \
    [("cnn.py", "images", "sgd"), ("cnn.py", "images", "adam"),
     ("resnet.py", "images", "sgd"), ("resnet.py", "images", "adam")]


@pytest.mark.parametrize("example, data_name, optimizer", CASES)
def test_every_step_is_a_plain_torch_optim_loop(example, data_name, optimizer, request):
    """Two members (two seeds, two rates) in one stack: each one's loss at every one of 20
    steps is its own plain loop's (BatchNorm's statistics per member, training mode)."""
    data = request.getfixturevalue(data_name)
    fields, make_opt = OPTIMIZERS[optimizer]
    cfg = config(f"{EXAMPLES / example}:make", depth=2, **fields)
    lrs = (0.05, 0.02) if optimizer in ("sgd", "momentum") else (3e-3, 1e-3)
    got = engine_runs(cfg, data, lrs, (0, 1))
    for out, lr, seed in zip(got, lrs, (0, 1), strict=True):
        want, _ = textbook(cfg, data, lr, seed, make_opt)
        assert out.success and out.curve_steps == tuple(range(1, 21))
        assert out.curve_loss == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_each_member_keeps_its_running_statistics_and_evaluates_in_eval_mode(images):
    """After 19 steps of two ResNet members (two seeds), each member's BatchNorm buffers are
    its own plain loop's, and an evaluation uses them (eval mode), not the batch's."""
    cfg = config(f"{EXAMPLES / 'resnet.py'}:make")
    t = FuncTrainer(cfg, images, dtype=F64)
    t.admit([0.05, 0.02], [3, 4])
    for _ in range(19):
        t.advance()
    x = images.x_eval.reshape(-1, 1, 8, 8)
    correct = t.net.evaluate(images.x_eval, images.y_eval)[0].tolist()
    for row, (lr, seed) in enumerate(((0.05, 3), (0.02, 4))):
        _, module = textbook(dataclasses.replace(cfg, steps=19), images, lr, seed,
                             OPTIMIZERS["sgd"][1])
        for name, buf in module.named_buffers():
            assert torch.allclose(t.net.fixed[name][row].to(buf.dtype), buf, rtol=1e-9), name
        with torch.no_grad():
            in_eval = int((module.eval()(x).argmax(-1) == images.y_eval).sum())
            in_training = int((module.train()(x).argmax(-1) == images.y_eval).sum())
        assert correct[row] == in_eval
    assert t.net.fixed["1.running_mean"][0].abs().sum() > 0 and in_eval != in_training


def test_layernorm_is_held_to_the_textbook(flat):
    cfg = config("factories:layernorm", optimizer="adam")
    out = engine_runs(cfg, flat, [1e-2], [0])[0]
    assert out.curve_loss == pytest.approx(textbook(cfg, flat, 1e-2, 0,
                                                    OPTIMIZERS["adam"][1])[0], rel=1e-9)


def test_the_mlp_example_decides_as_the_built_in_engine(flat):
    """examples/mlp.py starts from the built-in engine's initial weights: over rates across the
    edge, both engines give the same verdicts and stopping steps."""
    kw = dict(criterion="accuracy", threshold=0.8, steps=100, eval_every=10, nonfinite_every=10,
              batch_size=16, depth=2, width=8)
    lrs = [0.5 * 2 ** i for i in range(8)] * 2
    seeds = [0] * 8 + [1] * 8
    ours = engine_runs(config(f"{EXAMPLES / 'mlp.py'}:make", **kw), flat, lrs, seeds)
    builtin = engine_runs(config(None, input_lr_scale=1.0, **kw), flat, lrs, seeds,
                          trainer=lambda c, d, dtype: BatchedTrainer(c, d, dtype=dtype,
                                                                     full_eval=True))
    verdicts = [(o.success, o.diverged, o.steps) for o in ours]
    assert verdicts == [(o.success, o.diverged, o.steps) for o in builtin]
    assert {v[:2] for v in verdicts} >= {(True, False), (False, True)}  # the edge is inside


def test_dropout_differs_between_members_and_repeats(flat):
    """Dropout draws its own masks per member (two members of one seed and rate differ), and
    a run repeats exactly, leaving the caller's random state as it was."""
    cfg = config("factories:dropout", width=8)
    state = torch.get_rng_state()
    first = engine_runs(cfg, flat, [0.1, 0.1], [0, 0])
    assert torch.equal(torch.get_rng_state(), state)
    again = engine_runs(cfg, flat, [0.1, 0.1], [0, 0])
    assert first[0].curve_loss != first[1].curve_loss
    assert [o.curve_loss for o in first] == [o.curve_loss for o in again]


def test_the_users_module_is_never_modified(flat):
    """milr trains copies: the module the factory returned keeps its tensors, mode, dtype and
    device (compared with the same seed's module built afresh)."""
    import factories

    factories.KEPT.clear()
    cfg = config("factories:kept", width=8)
    t = FuncTrainer(cfg, flat, dtype=F64)  # builds seed 0's module, which the factory keeps
    t.admit([0.5], [0])
    while t.pending:
        t.advance()
    module, fresh = factories.KEPT[0], Factory.of(cfg, flat).build(0)
    assert module.training and all(p.dtype == torch.float32 for p in module.parameters())
    for k, v in fresh.state_dict().items():
        assert torch.equal(module.state_dict()[k], v), k


def test_members_are_built_under_their_seeds_weight_stream(flat):
    """A seed's module is the factory's under torch.manual_seed of the seed's weight stream:
    examples/mlp.py then draws the built-in engine's initial weights exactly."""
    from milr.engine.model import init_weights

    cfg = config(f"{EXAMPLES / 'mlp.py'}:make", depth=2, width=8)
    module = Factory.of(cfg, flat).build(5)
    linears = [m for m in module if isinstance(m, torch.nn.Linear)]
    for lin, w in zip(linears, init_weights(5, 16, 2, 8, 2), strict=True):
        assert torch.equal(lin.weight, w.T)


def test_lambda1_of_the_mlp_example_is_the_built_in_networks(flat):
    """milr sharpness with --model: the Hessian's top eigenvalue of examples/mlp.py at its
    initialisation is the built-in MLP's (the same weights)."""
    scfg = SharpnessConfig(samples=64, tol=1e-6)
    kw = dict(depth=2, width=8, device="cpu")
    ours = sharpness(NetworkConfig(model=f"{EXAMPLES / 'mlp.py'}:make", **kw), flat, 0, scfg,
                     dtype=F64)
    builtin = sharpness(NetworkConfig(**kw), flat, 0, scfg, dtype=F64)
    assert ours.converged and ours.lambda1 == pytest.approx(builtin.lambda1, rel=1e-5)
    with pytest.raises(ValueError, match="'raises' raised RuntimeError"):  # the model is built
        sharpness(NetworkConfig(model="factories:raises", **kw), flat, 0, scfg, dtype=F64)


def test_a_model_refuses_the_mlps_options():
    spec = f"{EXAMPLES / 'cnn.py'}:make"
    assert EstimateConfig(depth=1, width=4, model=spec).input_lr_scale == 1.0
    assert EstimateConfig(depth=1, width=4).input_lr_scale == 0.1
    for field, value in (("output_init", "he"), ("parametrization", "ntk"),
                         ("input_lr_scale", 0.1), ("activation", "tanh"),
                         ("architecture", "residual")):
        with pytest.raises(ValueError, match=f"{field} .* applies to the built-in MLP"):
            EstimateConfig(depth=1, width=4, model=spec, **{field: value})


def test_results_record_the_models_source_hash(flat):
    """--json and a sweep's rows carry model_sha256, the factory file's SHA-256."""
    from milr.engine.estimation import estimate

    spec = f"{EXAMPLES / 'mlp.py'}:make"
    cfg = config(spec, seeds=1, steps=20, eval_every=10, nonfinite_every=10, lr_min=0.5,
                 lr_max=1.0, widen=1.0, edge_probes=0, rtol=1.0)
    doc = estimate(cfg, Dataset(flat.name, flat.x_train.float(), flat.y_train,
                                flat.x_eval.float(), flat.y_eval, flat.classes)).to_dict()
    want = hashlib.sha256((EXAMPLES / "mlp.py").read_bytes()).hexdigest()
    assert doc["model_sha256"] == want and doc["config"]["model"] == spec
    assert identities(EstimateConfig(depth=1, width=4))["model_sha256"] is None
    with pytest.raises(ValueError, match="'raises' raised RuntimeError"):  # the model trains
        estimate(dataclasses.replace(cfg, model="factories:raises"), flat)


def test_a_resume_and_a_fit_refuse_two_versions_of_a_model(tmp_path):
    from milr.analysis.table import FitError, one_protocol
    from milr.sweep.store import COLUMNS, ResultStore, StoreError

    src = tmp_path / "m.py"
    src.write_text((EXAMPLES / "mlp.py").read_text())
    cfg = EstimateConfig(depth=1, width=4, model=f"{src}:make")
    row = {c: "" for c in COLUMNS} | {k: "" if v is None else str(v)
                                      for k, v in {**cfg.row(), **identities(cfg)}.items()}
    store = ResultStore(tmp_path / "r.csv")
    store.check_compatible([row], cfg)  # the same source: accepted
    src.write_text(src.read_text() + "\n# edited\n")
    with pytest.raises(StoreError, match="model_sha256=.* it changed"):
        store.check_compatible([row], cfg)
    other = {**row, "model_sha256": "0" * 64}
    with pytest.raises(FitError, match="model_sha256"):
        one_protocol([row, other])


def test_an_old_results_file_reads_as_no_model(tmp_path):
    from milr.sweep.store import COLUMNS, ResultStore, StoreError

    old = [c for c in COLUMNS if c not in ("model", "model_sha256", "dataset_sha256")]
    cfg = EstimateConfig(depth=1, width=4)
    values = {**{c: "" for c in old}, **{k: "" if v is None else str(v)
                                         for k, v in cfg.row().items() if k in old}}
    path = tmp_path / "old.csv"
    path.write_text(",".join(old) + "\n" + ",".join(values[c] for c in old) + "\n")
    store = ResultStore(path)
    rows = store.rows()
    assert rows[0]["model"] == "" and rows[0]["model_sha256"] == ""
    store.check_compatible(rows, cfg)
    with pytest.raises(StoreError, match="model"):
        store.check_compatible(rows, EstimateConfig(depth=1, width=4,
                                                    model=f"{EXAMPLES / 'mlp.py'}:make"))


@pytest.mark.parametrize("name, words", [
    ("raises", "raised RuntimeError: boom"),
    ("not_a_module", "returned a int, not a torch.nn.Module"),
    ("no_parameters", "no trainable parameters"),
    ("uses_item", "calls .item()"),
    ("wrong_outputs", "expected (2, 2)"),
])
def test_a_hostile_factory_is_one_line(flat, name, words):
    with pytest.raises(ValueError) as e:
        FuncTrainer(config(f"factories:{name}"), flat, dtype=F64)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_the_vmap_refusal_names_the_line(flat):
    with pytest.raises(ValueError, match=r"at factories.py:\d+ \(if x.sum\(\).item\(\) > 0:\)"):
        FuncTrainer(config("factories:uses_item"), flat, dtype=F64)


def test_the_cnn_needs_images(flat, images):
    with pytest.raises(ValueError, match=r"cnn needs images.*got \(16,\)"):
        FuncTrainer(config(f"{EXAMPLES / 'cnn.py'}:make"), flat, dtype=F64)
    assert FuncTrainer(config(f"{EXAMPLES / 'cnn.py'}:make"), images, dtype=F64).tensors == 4


def test_a_grid_names_its_model_relative_to_itself(tmp_path):
    from milr.sweep.grid import load_grid

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.py").write_text((EXAMPLES / "mlp.py").read_text())
    grid = tmp_path / "sub" / "g.yaml"
    grid.write_text("depths: [1]\nwidths: [4]\nmodel: m.py:make\n")
    assert load_grid(grid).config(1, 4).model == f"{tmp_path / 'sub' / 'm.py'}:make"


def test_estimate_finds_eta_of_the_cnn_over_its_seeds(images):
    """The whole search on the CNN example (1 × 8 × 8 images): an η* for every seed."""
    from milr.engine.estimation import estimate

    data = Dataset(images.name, images.x_train.float(), images.y_train,
                   images.x_eval.float(), images.y_eval, images.classes)
    data = shaped(data, (1, 8, 8))
    cfg = EstimateConfig(depth=1, width=4, model=f"{EXAMPLES / 'cnn.py'}:make", seeds=2,
                         steps=20, eval_every=10, batch_size=16, criterion="stable",
                         rtol=0.5, edge_probes=0, device="cpu")
    est = estimate(cfg, data, trainer=FuncTrainer(cfg, data))
    assert [s.status for s in est.seeds] == ["ok", "ok"] and est.median is not None
    assert est.code["model_sha256"] == hashlib.sha256((EXAMPLES / "cnn.py").read_bytes()
                                                      ).hexdigest()


# --- milr scan --model: the func engine's full-budget mode (issue 32 follow-up) ---------------
def test_a_scan_of_the_mlp_example_is_the_built_in_scan(flat):
    """examples/mlp.py, handed the built-in engine's initial weights, trained the whole budget at
    3 rates × 2 seeds in float64 (a scan's runs): each run's final training loss, validation
    loss and accuracy, met step and divergence are the built-in scan's."""
    kw = dict(criterion="accuracy", threshold=0.8, steps=60, eval_every=20, nonfinite_every=10,
              batch_size=16, depth=2, width=8)
    lrs, seeds = [0.25, 2.0, 64.0] * 2, [0, 0, 0, 1, 1, 1]
    ours = engine_runs(config(f"{EXAMPLES / 'mlp.py'}:make", **kw), flat, lrs, seeds,
                       trainer=lambda c, d, dtype: FuncTrainer(c, d, dtype=dtype,
                                                               full_budget=True))
    builtin = engine_runs(config(None, input_lr_scale=1.0, **kw), flat, lrs, seeds,
                          trainer=lambda c, d, dtype: BatchedTrainer(c, d, dtype=dtype,
                                                                     full_budget=True))
    def final(run) -> list[float]:  # NaN for a number a diverged run does not have
        return [math.nan if v is None else v for v in (run.train_loss, run.val_loss, run.val_acc)]

    for o, b in zip(ours, builtin, strict=True):
        assert (o.diverged, o.met_step, o.steps, o.eval_steps) == (
            b.diverged, b.met_step, b.steps, b.eval_steps), o.lr
        assert final(o) == pytest.approx(final(b), rel=1e-9, abs=1e-12, nan_ok=True), o.lr
    assert {o.diverged for o in ours} == {True, False}  # the grid crosses the edge
    assert any(o.met_step for o in ours) and any(o.val_loss for o in ours)


def test_milr_scan_runs_a_cnn_of_ones_own(images):
    """A scan (`milr.scan`) of the CNN example on 1 × 8 × 8 images trains on the torch.func
    engine: every run a full-budget ScanRun, η_opt with a documented status, the factory's
    source hash recorded."""
    from milr.base.config import ScanConfig
    from milr.base.results import ScanRun
    from milr.engine.scan import OPT_STATUSES
    from milr.engine.scanning import scan

    data = shaped(Dataset(images.name, images.x_train.float(), images.y_train,
                          images.x_eval.float(), images.y_eval, images.classes), (1, 8, 8))
    cfg = EstimateConfig(depth=1, width=4, model=f"{EXAMPLES / 'cnn.py'}:make", seeds=2,
                         steps=20, eval_every=10, batch_size=16, lr_min=0.01, lr_max=10.0,
                         device="cpu")
    r = scan(cfg, ScanConfig(points_per_octave=1), data)
    assert len(r.runs) == 2 * len(r.grid) and all(isinstance(x, ScanRun) for x in r.runs)
    assert r.optimum.status in OPT_STATUSES and r.optimum.status != "all_diverged"
    kept = [x for x in r.runs if not x.diverged]
    assert kept and all(x.eval_steps == (10, 20) and x.val_loss is not None for x in kept)
    assert r.to_dict()["model_sha256"] == hashlib.sha256(
        (EXAMPLES / "cnn.py").read_bytes()).hexdigest()


def test_members_split_across_calls_train_and_evaluate_as_one_call(images, monkeypatch):
    """Where a call would output too many bytes (func.CALL_BYTES), the members run in chunks
    of vmap and an evaluation in fewer images a chunk: in float64 nothing a run records changes
    (3 CNN members, the loss and accuracy at every evaluation)."""
    from milr.engine import func

    cfg = config(f"{EXAMPLES / 'cnn.py'}:make", criterion="accuracy", threshold=0.8, steps=24,
                 eval_every=8, nonfinite_every=8, width=3, batch_size=16)
    lrs, seeds = [0.2, 0.5, 1.0], [0, 1, 0]
    whole = engine_runs(cfg, images, lrs, seeds)
    monkeypatch.setattr(func, "CALL_BYTES", 8000)
    split = FuncTrainer(cfg, images, dtype=F64)
    assert (split.program.members_per_call, split.eval_chunk) == (1, 5)
    chunked = engine_runs(cfg, images, lrs, seeds)
    for a, b in zip(whole, chunked, strict=True):
        assert (a.steps, a.success, a.curve_steps, a.curve_acc) == (
            b.steps, b.success, b.curve_steps, b.curve_acc)
        assert a.curve_loss == pytest.approx(b.curve_loss, rel=1e-12, abs=1e-15)
    assert len({acc for o in whole for acc in o.curve_acc}) > 3  # they learn, differently


def test_a_models_threads_follow_its_counted_step(flat, images, monkeypatch):
    """On the CPU a model's threads follow the built-in engine's rule (`device.cpu_threads`) on
    its step's FLOPs, counted once on the meta device: a convolution's per output position,
    and examples/mlp.py's what the built-in engine counts for the same MLP."""
    from milr.engine import estimation

    cfg = config(f"{EXAMPLES / 'cnn.py'}:make", batch_size=8)
    cnn = FuncTrainer(cfg, images, dtype=F64)
    forward = 8 * 8 * 4 * 9 * 2 + 4 * 4 * 4 * 2 * 2  # 3 × 3 conv to 4 channels; head 4·4·4 → 2
    assert cnn.step_flops(3) == 3 * 3 * 8 * forward
    seen = []
    monkeypatch.setattr(estimation, "cpu_threads", lambda flops, cap: seen.append(flops) or 1)
    assert estimation.training_threads(cfg, torch.device("cpu"), images, 3, cnn) == 1
    assert seen == [cnn.step_flops(3)]
    mlp = dict(depth=2, width=8)
    assert FuncTrainer(config(f"{EXAMPLES / 'mlp.py'}:make", **mlp), flat, dtype=F64
                       ).step_flops(2) == BatchedTrainer(config(None, **mlp), flat).step_flops(2)


# --- seeds that are one module (refused) or start from identical weights (noted) --------------

NOTE = "built identical initial weights (parameters and buffers) for seeds"


def test_a_factory_returning_one_module_it_keeps_is_refused(flat):
    """Every member would alias one object: refused in one line before any training."""
    with pytest.raises(ValueError) as e:
        FuncTrainer(config("factories:cached", seeds=2), flat, dtype=F64)
    assert "returned the same module object for seeds 0 and 1" in str(e.value)
    assert "factories:cached" in str(e.value) and "\n" not in str(e.value)


@pytest.fixture
def noted(monkeypatch, capsys):
    """The note's stderr, from a process that has noted nothing yet."""
    from milr.engine import func

    monkeypatch.setattr(func, "NOTED", set(), raising=False)
    capsys.readouterr()
    return lambda: capsys.readouterr().err


def test_seeds_of_identical_weights_are_noted_once_and_run(flat, noted):
    """A checkpoint, zeros, constants: the seeds still differ in data order and dropout, so the
    run goes on (docs/protocol.md §2a) with one line saying the spread is not initialisation's;
    a second trainer of the same cell (the λ1 of the same run) does not repeat it."""
    cfg = config("factories:constant", seeds=3)
    t = FuncTrainer(cfg, flat, dtype=F64)
    assert len(t.modules) == 3
    err = noted()
    assert err.count("\n") == 1 and f"{NOTE} 0 and 1 at depth 1, width 4" in err, err
    FuncTrainer(cfg, flat, dtype=F64)
    assert noted() == ""
    FuncTrainer(config("factories:constant", seeds=2, width=5), flat, dtype=F64)
    assert "width 5" in noted()


def test_a_pair_of_equal_seeds_is_found_among_many(flat, monkeypatch, noted):
    """Seeds 0 and 2 alike, 1 other: found whichever pair it is, not only against the first."""
    real = Factory.build

    def alike(self, seed):
        return real(self, 0 if seed == 2 else seed)

    monkeypatch.setattr(Factory, "build", alike)
    FuncTrainer(config("factories:layernorm", seeds=3), flat, dtype=F64)
    assert f"{NOTE} 0 and 2" in noted()


@pytest.mark.parametrize("name, seeds", [("constant", 1), ("constant_head", 3),
                                         ("random_features", 3)])
def test_one_seed_or_weights_drawn_anywhere_are_not_noted(flat, noted, name, seeds):
    """One seed has nothing to be compared with; weights drawn in one layer, or in a buffer
    (random features under a head of zeros), differ between seeds."""
    assert len(FuncTrainer(config(f"factories:{name}", seeds=seeds), flat,
                           dtype=F64).modules) == seeds
    assert noted() == ""


def test_sharpness_tells_its_seeds_apart_as_a_search_does(flat, noted):
    """milr sharpness --model builds a seed at a time: its seeds are checked up front too."""
    from milr.engine.sharpness import sharpness_seeds

    kw = dict(depth=1, width=4, device="cpu", seeds=2)
    scfg = SharpnessConfig(samples=16)
    with pytest.raises(ValueError, match="returned the same module object for seeds 0 and 1"):
        sharpness_seeds(NetworkConfig(model="factories:cached", **kw), scfg, flat)
    assert len(sharpness_seeds(NetworkConfig(model="factories:constant", **kw), scfg,
                               flat)) == 2
    assert f"{NOTE} 0 and 1" in noted()
