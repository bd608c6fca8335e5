import pytest

from milr.base.expr import compile_filter
from milr.sweep.grid import GridError, parse_grid

H = "depths: [1]\nwidths: [8]\n"  # a valid head for the bad-grid cases


def test_grid_ranges_filters_and_exclude():
    g = parse_grid("depths: {start: 1, stop: 16, factor: 2}\n"
                      "widths: {start: 32, stop: 96, step: 32}\n"
                      "where: ['width >= 8 * depth', 'depth != 2']\n"
                      "exclude: [[1, 64]]\n")
    assert g.cells == ((1, 32), (1, 96), (4, 32), (4, 64), (4, 96), (8, 64), (8, 96))
    assert g.config(4, 64).threshold == 0.8


@pytest.mark.parametrize("text, message", [
    ("depths: [1, 2\nwidths: [8]\n", "grid line 2: malformed YAML"),
    (H + "stesp: 100\n", "grid line 3: unknown key 'stesp' (did you mean 'steps'?)"),
    (H + "steps: many\n", "grid line 3: steps must be a positive integer, got 'many'"),
    (H + "threshold: 2\n", "grid line 3: threshold must lie in (0, 1), got 2"),
    ("depths: [0, 1]\nwidths: [8]\n", "grid line 1: depths must hold positive integers, got 0"),
    ("depths: []\nwidths: [8]\n", "depths must be a non-empty list"),
    ("widths: [8]\n", "grid: missing key 'depths'"),
    (H + "where: width > 100\n", "the grid is empty after the where/exclude"),
    (H + "where: \"__import__('os').system('true')\"\n", "is not allowed"),
    (H + "where: height > 1\n", "unknown name 'height'"),
    (H + "exclude: [1, 8]\n", "exclude must be a list of [depth, width] pairs"),
    (H + "dataset: imagenet\n", "grid line 3: unknown dataset 'imagenet'"),
    ("- 1\n- 2\n", "expected a mapping"),
])
def test_bad_grids_name_key_and_line(text, message):
    with pytest.raises(GridError) as exc:
        parse_grid(text)
    assert message in str(exc.value)


def test_filter_expressions():
    f = compile_filter("width >= 4 * depth and not depth == 3", ["depth", "width"])
    assert f({"depth": 2, "width": 8}) and not f({"depth": 2, "width": 7})
    assert not f({"depth": 3, "width": 100})
    with pytest.raises(ValueError, match="is not allowed"):
        compile_filter("depth.__class__", ["depth"])


CHAIN = " + ".join(["depth"] * 1000) + " > 0"


@pytest.mark.parametrize("text, message", [
    ("width / (depth - 1) > 1", "division by zero at depth=1, width=8"),
    ("10.0 ** 400 > width", "exponent 400 is beyond ±64"),
    ("1e300 * 1e300 > width", "a result too large"),
    ("(-width) ** 0.5 > 1",
     "negative number to a fractional power ((-8) ** 0.5) at depth=1, width=8"),
    ("width ** 10 ** 10 > 1", "exponent"),
    ("width ** 1e400 > 1", "not a finite number"),
    ("(width ** 60) ** 60 > 1", "too large (beyond ±1.8e+308) at depth=1, width=8"),
    ("0 ** -1 < width", "division by zero"),
    (CHAIN, "too long"),
    ("(" * 40 + "depth" + " + 1)" * 40 + " > 0", "nested too deeply"),
    (" and ".join(["depth > 0"] * 100), "too long"),
])
def test_filter_arithmetic_errors_are_one_line_value_errors(text, message):
    """Arithmetic that fails, overflows, goes complex or explodes is refused, never raised raw."""
    import time

    start = time.process_time()
    with pytest.raises(ValueError) as exc:
        compile_filter(text, ["depth", "width"])({"depth": 1, "width": 8})
    assert time.process_time() - start < 1.0
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert repr(text[:30])[:-1] in str(exc.value)  # the expression is named
    with pytest.raises(GridError, match="grid line 3"):
        parse_grid(H + f"where: {text!r}\n".replace("'", '"'))


def test_filter_bounds_are_checked_when_parsed():
    """A constant exponent beyond the bound is refused before any record is seen."""
    with pytest.raises(ValueError, match="exponent"):
        compile_filter("width ** 100 > 1", ["width"])
    assert compile_filter("width ** 2 ** 3 >= 256", ["width"])({"width": 2})
    assert compile_filter("(depth - 1) ** 0.5 <= width / 4", ["depth", "width"])(
        {"depth": 5, "width": 8})


@pytest.mark.parametrize("text, message", [
    (H + "steps: 100\nsteps: 200\n", "grid line 4: duplicate key 'steps' (first on line 3)"),
    ("depths: {start: 1, stop: 4, start: 2}\nwidths: [8]\n",
     "grid line 1: duplicate key 'start' (first on line 1)"),
])
def test_duplicate_keys_are_refused(text, message):
    """YAML keeps the last of two equal keys; a grid must not silently drop the first."""
    with pytest.raises(GridError) as exc:
        parse_grid(text)
    assert str(exc.value) == message


def test_duplicate_key_in_a_grid_file_names_the_file(tmp_path):
    from milr.sweep.grid import load_grid

    path = tmp_path / "g.yaml"
    path.write_text(H + "seeds: 2\nseeds: 3\n")
    with pytest.raises(GridError, match=f"{path} line 4: duplicate key 'seeds'"):
        load_grid(path)
