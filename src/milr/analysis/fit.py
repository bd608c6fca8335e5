"""Power laws over cells of a results table: log η* = log C − α log(d·w), and η* = C d^−a w^−b.

Ordinary least squares in log space over cells (seeds aggregated per cell first, median by
default), with analytic standard errors and 95% intervals from Student's t, an optional bootstrap
over cells, R², RMSE, the largest residuals, a test of a = b, AIC / adjusted R² for the two
models, and prediction intervals. Pure computation: `plot.py` draws, the CLI prints.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import numpy as np

from ..base.config import FitConfig
from .table import (
    Cell,
    FitError,
    Usable,
    aggregate,
    cells_from_rows,
    read_table,
    select,
    select_excluded,
    usable,
)

CONF = 0.95
# Bootstrap resamples at most: seconds of refits (30 µs each), 50 times the ~2000 that percentile
# intervals need; more would run for minutes and add nothing.
MAX_BOOTSTRAP = 100_000


@dataclass
class LinearFit:
    """y = X β by least squares with its covariance (classical, homoscedastic)."""

    beta: np.ndarray
    cov: np.ndarray
    residuals: np.ndarray
    dof: int
    r2: float
    adj_r2: float
    rmse: float
    aic: float

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov))

    def ci(self, i: int) -> tuple[float, float]:
        t = _student_t().ppf(0.5 + CONF / 2, self.dof)
        return float(self.beta[i] - t * self.se[i]), float(self.beta[i] + t * self.se[i])


def _student_t():
    """scipy's Student t (scipy.stats takes seconds to import: only once a fit is computed,
    after the table has been read and checked)."""
    from scipy import stats

    return stats.t


def least_squares(x: np.ndarray, y: np.ndarray) -> LinearFit:
    n, k = x.shape
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    res = y - x @ beta
    rss = float(res @ res)
    dof = n - k
    s2 = rss / dof if dof > 0 else float("nan")
    cov = s2 * np.linalg.inv(x.T @ x)
    tss = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - rss / tss if tss > 0 else float("nan")
    adj = 1 - (1 - r2) * (n - 1) / dof if dof > 0 else float("nan")
    aic = n * math.log(max(rss, 1e-300) / n) + 2 * k
    return LinearFit(beta, cov, res, dof, r2, adj, math.sqrt(rss / n), aic)


@dataclass
class PowerLaw:
    """log η* = log C − α log(d·w) over `cells` (and the two-exponent model beside it)."""

    cells: list[Cell]
    alpha: float
    alpha_se: float
    alpha_ci: tuple[float, float]
    c: float
    c_ci: tuple[float, float]
    r2: float
    adj_r2: float
    rmse: float  # in natural-log units
    aic: float
    residuals: list[float]  # log(observed / fitted), per cell
    # η* = C d^−a w^−b
    a: float
    a_ci: tuple[float, float]
    b: float
    b_ci: tuple[float, float]
    a_minus_b_p: float  # two-sided p-value of a = b
    two_aic: float
    two_adj_r2: float
    bootstrap: dict | None = None
    _fit: LinearFit | None = field(default=None, repr=False)

    @property
    def compatible(self) -> bool:
        """a = b not rejected at 5%: the data do not contradict d·w as the variable."""
        return self.a_minus_b_p > 1 - CONF

    @property
    def resolved(self) -> bool:
        """a or b told from 0 at 95%: without either, a = b not rejected says nothing about d·w."""
        return not (self.a_ci[0] <= 0 <= self.a_ci[1] and self.b_ci[0] <= 0 <= self.b_ci[1])

    def worst(self, n: int = 3) -> list[tuple[Cell, float]]:
        order = np.argsort(-np.abs(self.residuals))[:n]
        return [(self.cells[i], self.residuals[i]) for i in order]

    def predict(self, depth: int, width: int) -> tuple[float, float, float]:
        """Predicted η* and its 95% prediction interval for a new cell."""
        f = self._fit
        x0 = np.array([1.0, math.log(depth * width)])
        y0 = float(x0 @ f.beta)
        s2 = float(f.residuals @ f.residuals) / f.dof
        spread = math.sqrt(s2 + x0 @ f.cov @ x0)  # cov = s2 (X'X)^-1: new noise + fit error
        t = _student_t().ppf(0.5 + CONF / 2, f.dof)
        what = f"the prediction at depth {depth}, width {width}"
        return (_exp(y0, what), _exp(y0 - t * spread, what + " (its interval)"),
                _exp(y0 + t * spread, what + " (its interval)"))

    def band(self, dw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fitted line and its 95% confidence band (for the mean) at products d·w."""
        x = np.column_stack([np.ones_like(dw, dtype=float), np.log(dw)])
        y = x @ self._fit.beta
        se = np.sqrt(np.einsum("ij,jk,ik->i", x, self._fit.cov, x))
        t = _student_t().ppf(0.5 + CONF / 2, self._fit.dof)
        return np.exp(y), np.exp(y - t * se), np.exp(y + t * se)

    def to_dict(self) -> dict:
        return {
            "law": "eta* = C * (depth * width) ** -alpha",
            "cells": len(self.cells),
            "alpha": self.alpha, "alpha_se": self.alpha_se, "alpha_ci95": self.alpha_ci,
            "C": self.c, "C_ci95": self.c_ci,
            "r2": self.r2, "adj_r2": self.adj_r2, "rmse_log": self.rmse, "aic": self.aic,
            "two_exponent": {"law": "eta* = C * depth ** -a * width ** -b",
                             "a": self.a, "a_ci95": self.a_ci, "b": self.b, "b_ci95": self.b_ci,
                             "p_a_equals_b": self.a_minus_b_p, "compatible": self.compatible,
                             "resolved": self.resolved,
                             "aic": self.two_aic, "adj_r2": self.two_adj_r2},
            "bootstrap": self.bootstrap,
            "residuals": [{"depth": c.depth, "width": c.width, "value": c.value,
                           "low": c.low, "high": c.high, "seeds": c.seeds, "rows": c.rows,
                           "log_residual": r} for c, r in zip(self.cells, self.residuals,
                                                              strict=True)],
        }


def _design(cells: list[Cell]) -> np.ndarray:
    return np.column_stack([np.ones(len(cells)), [math.log(c.depth * c.width) for c in cells]])


def check_bootstrap(n: int) -> None:
    """Refuse a resample count that would run for minutes or hours (see MAX_BOOTSTRAP)."""
    if n > MAX_BOOTSTRAP:
        raise FitError(f"bootstrap must be at most {MAX_BOOTSTRAP} resamples, got {n} (2000 "
                       "give stable 95% intervals)")


def fit_power_law(cells: list[Cell], bootstrap: int = 0, seed: int = 0) -> PowerLaw:
    """Fit both models; `bootstrap` > 0 adds percentile intervals from resampling cells."""
    check_bootstrap(bootstrap)
    if len(cells) < 4:
        raise FitError(f"need at least 4 cells to fit and test the law, got {len(cells)}")
    products = sorted({c.depth * c.width for c in cells})
    if len(products) < 2:
        raise FitError(f"the {len(cells)} cells share one value of depth × width "
                       f"({products[0]}): a slope in d·w cannot be fitted; include cells of "
                       "other sizes")
    y = np.log([c.value for c in cells])
    if np.ptp(y) <= 1e-9:
        raise FitError(f"all {len(cells)} cells have the same value ({cells[0].value:.6g}, to "
                       "1 part in 1e9): there is no variation to fit, so α = 0 and every "
                       "interval, R² and test would come from rounding alone; nothing is fitted")
    one = least_squares(_design(cells), y)
    x2 = np.column_stack([np.ones(len(cells)), np.log([c.depth for c in cells]),
                          np.log([c.width for c in cells])])
    if np.linalg.matrix_rank(x2) < 3:
        raise FitError("depth and width do not vary independently in the selected cells: "
                       "the two-exponent model cannot be fitted")
    two = least_squares(x2, y)
    # a = -beta1, b = -beta2; var(a - b) = var(b1) + var(b2) - 2 cov(b1, b2)
    diff = float(two.beta[1] - two.beta[2])
    se_diff = math.sqrt(two.cov[1, 1] + two.cov[2, 2] - 2 * two.cov[1, 2])
    p = float(2 * _student_t().sf(abs(diff) / se_diff, two.dof)) if se_diff > 0 else 1.0
    lo_c, hi_c = one.ci(0)
    lo_a, hi_a = one.ci(1)
    a_lo, a_hi = two.ci(1)
    b_lo, b_hi = two.ci(2)
    law = PowerLaw(
        cells=cells, alpha=-float(one.beta[1]), alpha_se=float(one.se[1]),
        alpha_ci=(-hi_a, -lo_a), c=_exp(one.beta[0], "C"), c_ci=(_exp(lo_c, "C's 95% CI"),
                                                                 _exp(hi_c, "C's 95% CI")),
        r2=one.r2, adj_r2=one.adj_r2, rmse=one.rmse, aic=one.aic,
        residuals=[float(r) for r in one.residuals],
        a=-float(two.beta[1]), a_ci=(-a_hi, -a_lo), b=-float(two.beta[2]), b_ci=(-b_hi, -b_lo),
        a_minus_b_p=p, two_aic=two.aic, two_adj_r2=two.adj_r2, _fit=one)
    if bootstrap:
        law.bootstrap = _bootstrap(cells, bootstrap, seed)
    return law


def _bootstrap(cells: list[Cell], n: int, seed: int) -> dict:
    """Percentile 95% intervals of α and C from refits on cells resampled with replacement."""
    rng = np.random.default_rng(seed)
    x, y = _design(cells), np.log([c.value for c in cells])
    alphas, logcs = [], []
    for _ in range(n):
        idx = rng.integers(0, len(cells), len(cells))
        if len(set(x[idx, 1])) < 2:
            continue  # a resample with one d·w value has no slope
        beta, *_ = np.linalg.lstsq(x[idx], y[idx], rcond=None)
        alphas.append(-beta[1])
        logcs.append(beta[0])
    q = [50 * (1 - CONF), 50 * (1 + CONF)]
    return {"resamples": len(alphas), "seed": seed,
            "alpha_ci95": tuple(float(v) for v in np.percentile(alphas, q)),
            "C_ci95": tuple(_exp(v, "C's bootstrap CI") for v in np.percentile(logcs, q))}


def _exp(v: float, what: str) -> float:
    """e^v, refused by name when it leaves the range of floating-point numbers (never inf or 0:
    values near 1e±300, or exponents far from 1, can push C or a prediction beyond it)."""
    try:
        out = math.exp(v)
    except OverflowError:
        out = math.inf
    if not (math.isfinite(out) and out >= 2.2250738585072014e-308):
        raise FitError(f"{what} = e^{float(v):.6g} lies beyond the range of floating-point "
                       "numbers: the values span too many orders of magnitude (rescale the "
                       "column, or fit a narrower range of cells)")
    return float(out)


@dataclass(frozen=True)
class Relation:
    """log y = k + slope · log x over matched cells, e.g. η* against λ1."""

    slope: float
    slope_ci: tuple[float, float]
    intercept: float
    r2: float
    cells: int


def relation(xs: list[float], ys: list[float]) -> Relation:
    if len(xs) < 3:
        raise FitError(f"need at least 3 matched cells, got {len(xs)}")
    x = np.column_stack([np.ones(len(xs)), np.log(xs)])
    f = least_squares(x, np.log(ys))
    lo, hi = f.ci(1)
    return Relation(float(f.beta[1]), (lo, hi), float(f.beta[0]), f.r2, len(xs))


def sharpness_relations(rows: list[dict], cells: list[Cell], source: str = "results",
                        how: str = "median") -> dict:
    """λ1 against d·w, η* against λ1 (plain and input-lr preconditioned), and c = η*·λ1, on the
    fitted cells, seeds aggregated per cell by `how` (as η* was). Only converged λ1 values are
    used.

    Returns {} when the table has no converged λ1 (a sweep without lambda1_samples).
    """
    out = {}
    keep = {(c.depth, c.width) for c in cells}
    eta = {(c.depth, c.width): c.value for c in cells}
    for col in ("lambda1", "lambda1_eff"):
        if col not in rows[0]:
            continue
        values, _ = usable(rows, col, source)
        values = [u for u in values if (u.depth, u.width) in keep]
        if not values:
            continue
        lam = aggregate(values, rows, how)
        rel = {"c": dimensionless_c(rows, col, keep, source, how)}
        if len(lam) >= 3:
            rel.update(_lambda_relations(lam, eta))
        out[col] = rel
    return out


def _lambda_relations(lam: list[Cell], eta: dict) -> dict:
    """Cell medians of λ1 against d·w and of η* against λ1 and 2/λ1."""
    vs_dw = relation([c.depth * c.width for c in lam], [c.value for c in lam])
    vs_eta = relation([c.value for c in lam], [eta[(c.depth, c.width)] for c in lam])
    ratio = [eta[(c.depth, c.width)] / (2 / c.value) for c in lam]
    # η* against 2/λ1 has the opposite exponent; -1 there would mean η* = const · 2/λ1
    inverse = {"slope": -vs_eta.slope, "slope_ci": (-vs_eta.slope_ci[1], -vs_eta.slope_ci[0])}
    return {"vs_depth_width": vs_dw.__dict__, "eta_vs_lambda1": vs_eta.__dict__,
            "eta_vs_2_over_lambda1": inverse,
            "eta_over_2_div_lambda1": {"median": statistics.median(ratio), "min": min(ratio),
                                       "max": max(ratio)}}


def dimensionless_c(rows: list[dict], col: str, keep: set[tuple[int, int]],
                    source: str = "results", how: str = "median") -> dict:
    """c = η*·λ1 per seed (one row: its own η* and λ1), its median (or mean: `how`) and range
    per cell, and its exponent against d·w: c constant across cells would mean η* = c / λ1 at
    every size."""
    eta = {u.line: u.value for u in usable(rows, "lr_star", source)[0]}
    lam, _ = usable(rows, col, source)
    per_seed = [Usable(u.line, u.depth, u.width, u.seed, eta[u.line] * u.value) for u in lam
                if u.line in eta and (u.depth, u.width) in keep]
    for u in per_seed:
        if not (math.isfinite(u.value) and u.value > 0):
            raise FitError(f"{source} line {u.line}: lr_star × {col} = {u.value!r} lies beyond "
                           "the range of floating-point numbers")
    cells = aggregate(per_seed, rows, how)
    values = [u.value for u in per_seed]
    out = {"seeds": len(values), "aggregate": how,
           "median": statistics.median(values) if values else None,
           "min": min(values, default=None), "max": max(values, default=None),
           "per_cell": [{"depth": c.depth, "width": c.width, "seeds": c.seeds, "rows": c.rows,
                         how: c.value, "min": c.low, "max": c.high} for c in cells],
           "vs_depth_width": None}
    if len(cells) >= 3 and len({c.depth * c.width for c in cells}) >= 2:
        out["vs_depth_width"] = relation([c.depth * c.width for c in cells],
                                         [c.value for c in cells]).__dict__
    return out


@dataclass
class TableFit:
    """A results table fitted (`fit_table`): what `milr fit` reports."""

    law: PowerLaw
    excluded: list[dict]  # the rows left out that lie in the fitted regime, with why
    sharpness: dict  # sharpness_relations when the column is lr_star; {} otherwise


def fit_table(path: str, cfg: FitConfig) -> TableFit:
    """Read a results table, aggregate its seeds per cell, keep cfg's regime and fit the laws
    (and, for η*, the λ1 relations): the library's `milr fit`."""
    check_bootstrap(cfg.bootstrap)  # before a large table is read
    rows = read_table(path)
    cells, excluded = cells_from_rows(rows, cfg.column, str(path), cfg.aggregate)
    cells = select(cells, cfg)
    law = fit_power_law(cells, cfg.bootstrap, cfg.seed)
    relations = (sharpness_relations(rows, cells, str(path), cfg.aggregate)
                 if cfg.column == "lr_star" else {})
    return TableFit(law, select_excluded(excluded, cfg), relations)
