"""The coordinate check's figure (`milr coord-check --out`), drawn as μP's own coord-check plots."""

from __future__ import annotations

import numpy as np

from .plot import _plain_log_ticks, _pyplot


def coord_figure(check):
    """One column per layer: above, its coordinate size (mean |z|) against width (or depth);
    below, its change from initialisation; both log-log, one line per step t (t = 0 has no
    change). Each panel's title gives the slope at the last step, in red where it is above the
    tolerance (or undefined). Gids: "size:<layer>:<t>",
    "change:<layer>:<t>"."""
    plt = _pyplot()
    from matplotlib.ticker import NullLocator

    n, steps = len(check.layers), check.config.steps
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n + 1, 7.2), squeeze=False)
    colours = plt.cm.viridis(np.linspace(0, 0.9, steps + 1))
    x = np.asarray(check.values, dtype=float)
    for k, (layer, slope) in enumerate(zip(check.layers, check.slopes, strict=True)):
        for row, (what, data, first) in enumerate((("size", check.size[k], 0),
                                                   ("change", check.change[k], 1))):
            ax = axes[row][k]
            shown = []
            for t in range(first, steps + 1):
                y = np.array([v[t] for v in data], dtype=float)
                y[~(np.isfinite(y) & (y > 0))] = np.nan  # a log axis shows neither 0 nor inf
                ax.plot(x, y, marker="o", ms=4, color=colours[t], label=f"t = {t}",
                        gid=f"{what}:{layer}:{t}")
                shown += [v for v in y if np.isfinite(v)]
            _span_at_least(ax, shown)
            value = getattr(slope, what)
            bad = value is None or value > check.tolerance
            ax.set_title(f"{layer}\nslope {'-' if value is None else f'{value:+.2f}'}"
                         + (f" (> +{check.tolerance:g})" if bad else ""),
                         color="#D55E00" if bad else "k")
            ax.set(xscale="log", yscale="log", xlabel=f"{check.axis} (log scale)")
            ax.grid(which="both", alpha=0.25)
            _plain_log_ticks(ax.yaxis)
            ax.set_xticks(x, [str(v) for v in check.values])
            ax.xaxis.set_minor_locator(NullLocator())
    axes[0][0].set_ylabel("mean |z|  (coordinate size)")
    axes[1][0].set_ylabel("mean |z − z₀|  (change from init)")
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.suptitle(f"{check.describe()}\n{check.verdict()}", fontsize=12)
    fig.tight_layout()
    return fig


def _span_at_least(ax, values: list[float]) -> None:
    """A y range of at least a factor of 20 around the values: a flat line then looks flat,
    not stretched over the panel by autoscaling."""
    if values:
        lo, hi = min(values), max(values)
        if hi / lo < 20:
            mid = (lo * hi) ** 0.5
            ax.set_ylim(mid / 20 ** 0.5, mid * 20 ** 0.5)
