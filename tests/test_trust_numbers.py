"""Numbers milr must never produce, and edges that must end in one clear line (issue 19,
sections 2 and 4): each test here failed on the code before its fix."""

import json

from milr import table

LAW = [(d, w, 3.0 * (d * w) ** -0.5) for d in (1, 2, 4) for w in (16, 32, 64)]


def law_csv(rows=LAW, extra="", columns="depth,width,seed,status,lr_star") -> str:
    return columns + "\n" + "".join(f"{d},{w},0,ok,{v}{extra}\n" for d, w, v in rows)


# --- a torn last line, a short row -----------------------------------------------------------


def test_a_torn_last_line_is_left_out_with_its_line_and_reason(tmp_path, run_milr):
    """A sweep killed mid-write leaves '8,128,0,ok,7.3' for 7.312e-05: never fitted."""
    path = tmp_path / "r.csv"
    path.write_text(law_csv() + "8,128,0,ok,7.3")
    cells, notes = table.cells_from_rows(table.read_table(path))
    assert (8, 128) not in {(c.depth, c.width) for c in cells}
    assert [(n["line"], n["reason"].split(":")[0]) for n in notes] == [(11, "no line end")]
    code, out, _ = run_milr(["fit", str(path), "--json"])
    assert code == 0
    assert [n["line"] for n in json.loads(out)["excluded"]] == [11]


def test_a_row_with_too_few_fields_is_left_out_with_its_line(tmp_path, run_milr):
    path = tmp_path / "r.csv"
    path.write_text(law_csv() + "8,64,0,ok\n")
    _, notes = table.cells_from_rows(table.read_table(path))
    assert [(n["line"], n["reason"]) for n in notes] == [(11, "4 fields, but the header has 5")]
    code, out, _ = run_milr(["fit", str(path)])
    assert code == 0 and "4 fields, but the header has 5" in out


def test_a_table_whose_only_row_is_torn_is_refused(tmp_path, run_milr):
    path = tmp_path / "r.csv"
    path.write_text("depth,width,seed,status,lr_star\n1,16,0,ok,0.7")
    code, _, err = run_milr(["fit", str(path)])
    assert code == 2 and "no complete data rows (line 2: no line end" in err
