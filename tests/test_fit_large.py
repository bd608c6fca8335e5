"""milr fit on large tables: rows are read one line at a time and kept compactly (a dict per
row held a million rows of a sweep's 39 columns in about 5 GB)."""

from __future__ import annotations

import csv
import tracemalloc

from milr.analysis.table import cells_from_rows, read_table

HEADER = ["depth", "width", "dataset", "threshold", "steps", "batch_size", "eval_every",
          "seed", "lr_star", "lo", "hi", "status", "trials", "cell_wall_time", "finished_at",
          *(f"extra{i}" for i in range(24))]


def write(path, n: int) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for i in range(n):
            d, wd = 1 + i % 4, 8 << (i // 4 % 3)
            eta = 2.0 / (d * wd) ** 0.5 * (1 + (i % 7) / 100)
            w.writerow([d, wd, "gaussians", 0.75, 100, 128, 50, i // 12, repr(eta),
                        repr(eta * 0.97), repr(eta * 1.03), "ok", 20, f"{i % 97 / 10:.2f}",
                        f"2026-11-30T12:{i % 60:02d}:00", *(["x"] * 24)])


def test_a_large_table_is_read_compactly(tmp_path):
    path = tmp_path / "big.csv"
    write(path, 20_000)
    tracemalloc.start()
    try:
        rows = read_table(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(rows) == 20_000
    assert peak < 20e6, f"{peak / 1e6:.0f} MB for 20,000 rows"  # about 1 kB a row at most
    r = rows[12_345]
    assert r.line == 12_347 and r["depth"] == "2" and r["seed"] == str(12_345 // 12)
    assert list(r) == HEADER
    cells, notes = cells_from_rows(rows)
    assert len(cells) == 12 and not notes
