import pytest

from milr.analysis.table import Cell
from milr.cli.render import power, seeds_per_cell


@pytest.mark.parametrize("exponent, digits, shown", [
    (-0.7, 4, "^−0.7000"), (1.0, 4, "^1.0000"), (0.25, 3, "^0.250"),
    (-0.00001, 4, "^0.0000"),  # rounds to zero: no sign on a zero
])
def test_power_has_one_sign(exponent, digits, shown):
    assert power(exponent, digits) == shown


def test_seeds_per_cell_names_the_thin_cells():
    full = [Cell(d, w, 1.0, 1.0, 1.0, 3, 3) for d in (1, 2) for w in (8, 16)]
    thin = [Cell(4, 8, 1.0, 1.0, 1.0, 1, 3), Cell(4, 16, 1.0, 1.0, 1.0, 2, 3)]
    assert seeds_per_cell(full + thin) == "3 of 3 in 4 cells; 1 of 3 in (4, 8); 2 of 3 in (4, 16)"
