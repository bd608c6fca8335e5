import json

import pytest
from typer.testing import CliRunner

from milr.base.config import NETWORK_FIELDS
from milr.cli import app

runner = CliRunner()
QUICK = ["--depth", "1", "--width", "16", "--steps", "300", "--seeds", "2", "--device", "cpu"]


def test_estimate_end_to_end_on_gaussians():
    res = runner.invoke(app, ["estimate", *QUICK])
    assert res.exit_code == 0, res.output
    assert "η* = " in res.output and "median of 2 seed(s)" in res.output


def test_estimate_json_has_config_seeds_and_trials():
    res = runner.invoke(app, ["estimate", *QUICK, "--json"])
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert doc["config"]["depth"] == 1 and doc["config"]["threshold"] == 0.8
    assert len(doc["seeds"]) == 2 and all(s["status"] == "ok" for s in doc["seeds"])
    assert doc["runs"] == len(doc["trials"]) > 0
    lo, hi = doc["spread"]
    assert lo <= doc["median"] <= hi


@pytest.mark.parametrize("args, phrase", [
    (["--depth", "0", "--width", "8"], "depth must be a positive integer, got 0"),
    (["--depth", "2", "--width", "-3"], "width must be a positive integer, got -3"),
    (["--depth", "2", "--width", "8", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--depth", "2", "--width", "8", "--threshold", "1.2"], "threshold must lie in (0, 1)"),
    (["--depth", "2", "--width", "8", "--threshold", "0"], "threshold must lie in (0, 1)"),
    (["--depth", "two", "--width", "8"], "Invalid value for '--depth'"),
    (["--width", "8"], "Missing option '--depth'"),
    (["--depth", "2", "--width", "8", "--dataset", "mnist", "--data-dir", "/nonexistent"],
     "data directory /nonexistent does not exist"),
])
def test_bad_input_is_one_line_exit_2(args, phrase, run_milr, monkeypatch):
    monkeypatch.setattr("milr.data.lookup.SYSTEM_DIRS", {"mnist": []})
    code, out, err = run_milr(["estimate", *args])
    assert code == 2
    assert phrase in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_sharpness_command_reports_converged_lambda1():
    res = runner.invoke(app, ["sharpness", "--depth", "2", "--width", "8", "--seeds", "2",
                              "--samples", "128", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    # what λ1 used, and nothing else (no criterion, threshold or budget: no search ran)
    assert tuple(doc["config"]) == NETWORK_FIELDS and doc["config"]["seeds"] == 2
    assert [r["seed"] for r in doc["results"]] == [0, 1]
    assert all(r["converged"] and r["lambda1"] > 0 and r["residual"] < 1e-3
               for r in doc["results"])
    text = runner.invoke(app, ["sharpness", "--depth", "2", "--width", "8", "--seeds", "1",
                               "--samples", "128"])
    assert "λ1 = " in text.output and "median of 1 converged seed(s)" in text.output


def test_sharpness_bad_samples(run_milr):
    code, _, err = run_milr(["sharpness", "--depth", "2", "--width", "8", "--samples", "0"])
    assert code == 2 and "samples must be a positive integer, got 0" in err
