"""Start-up: a command refuses bad input before torch (and scipy.stats) load, which takes
seconds on a busy machine; the refusal is still one line and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
sys.argv = ["milr", *json.loads(sys.argv[1])]
from milr.cli import main
try:
    main()
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "loaded": [m for m in ("torch", "scipy.stats")
                                           if m in sys.modules]}))
"""


def refusal(args: list[str], cwd) -> tuple[int, list[str], str]:
    """Run `milr ARGS` in a fresh interpreter: its exit code, which heavy modules were loaded
    when it ended, and its stderr."""
    p = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True,
                       text=True, cwd=cwd, timeout=120)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return out["code"], out["loaded"], p.stderr


@pytest.mark.parametrize("args, says", [
    (["estimate", "--depth", "0", "--width", "8"], "depth must be a positive integer"),
    (["estimate", "--depth", "2", "--width", "8", "--dataset", "mnist", "--data-dir",
      "no-such-dir"], "no-such-dir does not exist"),
    (["estimate", "--depth", "2", "--width", "8", "--dataset", "none.npz", "--threshold",
      "0.5"], "no such .npz file"),
    (["sharpness", "--depth", "2", "--width", "0"], "width must be a positive integer"),
    (["sweep", "no-such-grid.yaml"], "no-such-grid.yaml"),
    (["fit", "no-such-results.csv"], "no-such-results.csv"),
])
def test_refusals_come_before_torch(tmp_path, args, says):
    code, loaded, stderr = refusal(args, tmp_path)
    assert code == 2
    assert says in stderr and len(stderr.strip().splitlines()) == 1
    assert loaded == []


def test_fit_refuses_a_bad_table_before_scipy(tmp_path):
    (tmp_path / "r.csv").write_text("depth,width,seed,lr_star\n2,8,0,-1\n")
    code, loaded, stderr = refusal(["fit", "r.csv"], tmp_path)
    assert code == 2 and "finite positive number" in stderr
    assert loaded == []
