import pytest

from milr.expr import compile_filter
from milr.grid import GridError, parse_grid

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
