"""One source for every default, and one network for training and λ1."""

import dataclasses

import pytest
import torch
import typer

from milr import EstimateConfig
from milr.base.config import CoordConfig, FitConfig, NetworkConfig, ScanConfig, SharpnessConfig
from milr.cli import app
from milr.engine.sharpness import network, network_loss
from milr.engine.train import BatchedTrainer

COMMANDS = {"estimate": (EstimateConfig,), "sharpness": (NetworkConfig, SharpnessConfig),
            "fit": (FitConfig,), "coord-check": (CoordConfig,),
            "scan": (EstimateConfig, ScanConfig)}
# what a command records or draws, not what it measures (full_eval changes only the recorded
# accuracies, never a verdict: tests/test_early_exit.py)
NOT_IN_CONFIG = {"as_json", "lambda1_samples", "results", "predict", "plot", "full_eval", "out"}


def command_params(name):
    return {p.name: p for p in typer.main.get_command(app).commands[name].params}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_cli_defaults_and_help_come_from_the_config(name):
    fields = {f.name: f for cls in COMMANDS[name] for f in dataclasses.fields(cls)}
    params = command_params(name)
    for pname, p in params.items():
        if pname in NOT_IN_CONFIG:
            continue
        assert pname in fields, f"{name} --{pname} is not a config field"
        f = fields[pname]
        if f.default is not dataclasses.MISSING and pname != "where":
            assert p.default == f.default, f"{name} --{pname}: {p.default!r} != {f.default!r}"
        assert p.help == f.metadata["help"]


def test_every_estimate_field_is_an_option():
    assert set(EstimateConfig.field_names()) <= set(command_params("estimate"))
    for cls in (NetworkConfig, SharpnessConfig):
        assert {f.name for f in dataclasses.fields(cls)} <= set(command_params("sharpness"))


def test_lambda1_network_is_the_engines_network(tiny):
    for output_init in ("fan-in", "zero"):
        cfg = EstimateConfig(depth=3, width=16, output_init=output_init, loss="mse")
        trainer = BatchedTrainer(cfg, tiny)
        trainer.admit([0.1, 0.2], [4, 5])
        ref = network(cfg, tiny, 5)
        engine = trainer.net.select(torch.tensor([1]))
        for a, b in zip(ref.parameters(), engine.parameters(), strict=True):
            assert torch.equal(a.detach(), b)
        x, y = tiny.x_train[:64], tiny.y_train[:64]
        torch.testing.assert_close(ref.forward(x).detach(), engine.forward(x), rtol=0, atol=0)
        # and the loss λ1 differentiates is the engine's first training loss on that batch
        first = engine.sgd_step(x[None], y[None], [torch.zeros(1, 1, 1)] * 4, cfg.loss)
        assert network_loss(ref.parameters(), x, y, cfg.loss).item() == pytest.approx(
            first.item(), rel=1e-6)


# The package's parts in layer order, and each part's modules in order: a module imports only
# from those before it (README: Development). A part's __init__ holds its docstring and comes
# first, except cli's, which re-exports the command (`milr.cli:main`) and so comes last.
LAYERS = [
    ("", ["version"]),
    ("base", ["__init__", "files", "seeding", "expr", "spec", "config", "cost", "device",
              "results"]),
    ("data", ["__init__", "formats", "mnist1d", "lookup", "fetch", "survey"]),
    ("engine", ["__init__", "model", "train", "search", "func", "sharpness", "estimation",
                "scan", "scanning", "coord"]),
    ("sweep", ["__init__", "grid", "store", "tasks", "executors", "run"]),
    ("analysis", ["__init__", "table", "fit", "plot", "coordplot"]),
    ("cli", ["render", "coordview", "datacmd", "plotcmd", "main", "__init__"]),
    ("", ["__init__", "__main__"]),
]
ORDER = [f"{part}.{m}" if part else m for part, mods in LAYERS for m in mods]


def imported(module: str, node) -> list[str]:
    """The modules of ORDER that a relative `from ... import` in `module` names."""
    package = module.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)]
    name = ".".join(base + (node.module.split(".") if node.module else []))
    out = []
    for alias in node.names:  # `from ..sweep import run`: a module of the part
        sub = f"{name}.{alias.name}" if name else alias.name
        out.append(sub if sub in ORDER else name if name in ORDER else f"{name}.__init__")
    return out


def test_imports_run_one_way():
    import ast
    from pathlib import Path

    src = Path(__file__).parents[1] / "src" / "milr"
    files = {".".join(p.relative_to(src).with_suffix("").parts) for p in src.rglob("*.py")}
    assert files == set(ORDER)
    for i, name in enumerate(ORDER):
        tree = ast.parse((src / f"{name.replace('.', '/')}.py").read_text())
        for node in ast.walk(tree):  # lazy imports inside functions count too
            assert not isinstance(node, ast.Import) or not any(
                a.name.startswith("milr") for a in node.names), f"{name}: import milr"
            if isinstance(node, ast.ImportFrom):
                assert node.level or not (node.module or "").startswith("milr"), name
                for t in imported(name, node) if node.level else []:
                    assert t in ORDER and ORDER.index(t) < i, \
                        f"{name} imports {t}, which comes after it"


def test_configuring_loads_no_torch():
    import subprocess
    import sys

    code = "import sys, milr.base.config, milr.sweep.grid; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
