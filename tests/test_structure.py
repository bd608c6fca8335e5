"""One source for every default, and one network for training and λ1."""

import dataclasses

import pytest
import torch
import typer

from milr import EstimateConfig
from milr.cli import app
from milr.config import FitConfig, NetworkConfig, SharpnessConfig
from milr.sharpness import network, network_loss
from milr.train import BatchedTrainer

COMMANDS = {"estimate": (EstimateConfig,), "sharpness": (NetworkConfig, SharpnessConfig),
            "fit": (FitConfig,)}
NOT_IN_CONFIG = {"as_json", "lambda1_samples", "results", "predict", "plot"}


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


# The package's modules, each importing only from those before it (README: Development).
LAYERS = ["version", "files", "seeding", "expr", "config", "cost", "data", "device", "results",
          "model", "train", "search", "sharpness", "estimation", "grid", "store", "tasks",
          "executors", "sweep", "table", "fit", "render", "plot", "fetch", "datacmd", "plotcmd",
          "cli", "__init__", "__main__"]


def test_imports_run_one_way():
    import ast
    from pathlib import Path

    src = Path(__file__).parents[1] / "src" / "milr"
    assert sorted(p.stem for p in src.glob("*.py")) == sorted(LAYERS)
    for i, name in enumerate(LAYERS):
        tree = ast.parse((src / f"{name}.py").read_text())
        for node in ast.walk(tree):  # lazy imports inside functions count too
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets = [node.module] if node.module else [a.name for a in node.names]
                for t in targets:
                    assert LAYERS.index(t) < i, f"{name} imports {t}, which comes after it"


def test_configuring_loads_no_torch():
    import subprocess
    import sys

    code = "import sys, milr.config, milr.grid; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
