"""The standard figures of a study table (:func:`plot_study`); matplotlib is imported lazily."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..hierarchy import LEVELS
from .cells import PARAMETERS
from .storage import as_table, atomic_file

__all__ = ["plot_study"]


def _save(fig, path):
    """Write ``fig`` to ``path`` atomically (format from the suffix); returns the path."""
    path = Path(path)
    with atomic_file(path, suffix=path.suffix) as fh:
        fig.savefig(fh, format=path.suffix.lstrip("."), dpi=120, bbox_inches="tight")
    return path


def _varying(table):
    out = []
    for c in PARAMETERS:
        if c in table and table[c].astype(str).nunique() > 1:
            out.append(c)
    return out


def _numeric_x(table, x):
    if x == "p":
        return table["p"].astype(str).map(lambda s: float(np.mean([float(v) for v in s.split(",")])))
    return table[x].astype(float)


def _line_label(method, others, key):
    extra = ", ".join(f"{k}={v}" for k, v in zip(others, key))
    return f"{method}" + (f" ({extra})" if extra else "")


def _lines(d, x, varying):
    """Yield ``(label, xs, ys)`` means over replications (and blocks) per method and other parameters."""
    others = [v for v in varying if v != x]
    d = d.assign(_x=_numeric_x(d, x))
    keys = ["method"] + others
    for key, g in d.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        m = g.groupby("_x")["value"].mean().sort_index()
        yield _line_label(key[0], others, key[1:]), m.index.to_numpy(), m.to_numpy()


def _error_figure(d, x, varying, metric, *, loglog, squared=False, slope=None):
    from matplotlib.figure import Figure

    levels = [lv for lv in LEVELS if (d["level"] == lv).any()]
    fig = Figure(figsize=(4.2 * len(levels) + 1.5, 3.8))
    axes = fig.subplots(1, len(levels), squeeze=False, sharey=True)[0]
    if squared:
        d = d.assign(value=d["value"] ** 2)
    for ax, level in zip(axes, levels):
        first = None
        for label, xs, ys in _lines(d[d["level"] == level], x, varying):
            if np.nanmax(np.abs(ys), initial=0.0) < 1e-10:
                continue  # exact to rounding (the true model): nothing to see on a log scale
            keep = ys > 0 if loglog else np.isfinite(ys)
            ax.plot(xs[keep], ys[keep], marker="o", label=label)
            if first is None and keep.sum() >= 1:
                first = (xs[keep][0], ys[keep][0], xs[keep][-1])
        if slope is not None and first is not None:
            x0, y0, x1 = first
            xr = np.array([x0, x1])
            ax.plot(xr, y0 * (xr / x0) ** slope, ls="--", color="0.5", lw=1, label=f"slope {slope:g}")
        if loglog:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_title(f"{level} structures")
        ax.set_xlabel("p (mean per modality)" if x == "p" else x)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"mean {metric}" + ("$^2$" if squared else ""))
    _legend(axes)
    return fig


def _legend(axes):
    """A legend right of the last panel that drew a line (none when every line was left out)."""
    drawn = [ax for ax in axes if ax.get_legend_handles_labels()[0]]
    if drawn:
        drawn[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))


def _line_figure(d, x, varying, ylabel, *, logy=False, ylim=None):
    """One panel: the mean of ``value`` against ``x`` (log scale), a line per method and setting."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for label, xs, ys in _lines(d, x, varying):
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    _legend([ax])
    return fig


def _pattern_table(table):
    """Exact-recovery indicator per (cell, replication, method); a failed fit counts as a miss."""
    has = table.loc[table["metric"] == "pattern_exact", "method"].unique()
    t = table[table["method"].isin(has)]
    keys = ["cell", "replication", "method"] + [c for c in PARAMETERS if c in t]
    exact = t[t["metric"] == "pattern_exact"][["cell", "replication", "method", "value"]]
    runs = t[keys].drop_duplicates(subset=["cell", "replication", "method"])
    out = runs.merge(exact, on=["cell", "replication", "method"], how="left")
    out["value"] = out["value"].fillna(0.0)
    return out


def plot_study(results, out):
    """Write the standard figures of a study table into directory ``out``.

    * ``{metric}_vs_n.png`` for ``loading_sin_theta``, ``block_error`` and
      ``block_error_relative`` when ``n`` varies: mean error against ``n``,
      one panel per level (global / partial / specific), one line per method
      (and per value of every other varying parameter), log-log, with a
      reference slope of -1/2. Lines at rounding level (the ``truth`` method)
      are left out.
    * ``loading_sin_theta_squared_vs_p.png`` when ``p`` varies (theory: affine in ``p``).
    * ``pattern_recovery_vs_{x}.png`` for ``x`` in ``n``, ``loading_scale``,
      ``noise``: the fraction of replications with the exact pattern (a failed
      fit counts as a miss).
    * ``fit_time_vs_n.png`` when ``n`` varies.

    Parameters
    ----------
    results : DataFrame or path
        The table returned by :func:`run_study` or its ``results.csv``.
    out : path
        Directory (created if needed).

    Returns
    -------
    list of Path
        The files written.
    """
    table = as_table(results)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    varying = _varying(table)
    ok = table[(table["metric"] != "error") & table["value"].notna()]
    paths = []
    for metric in ("loading_sin_theta", "block_error", "block_error_relative"):
        d = ok[ok["metric"] == metric]
        if d.empty:
            continue
        if "n" in varying:
            fig = _error_figure(d, "n", varying, metric, loglog=True, slope=-0.5)
            paths.append(_save(fig, out / f"{metric}_vs_n.png"))
        if "p" in varying and metric == "loading_sin_theta":
            fig = _error_figure(d, "p", varying, metric, loglog=False, squared=True)
            paths.append(_save(fig, out / f"{metric}_squared_vs_p.png"))
    if (ok["metric"] == "pattern_exact").any():
        pt = _pattern_table(table)
        for x in ("n", "loading_scale", "noise"):
            if x in varying:
                fig = _line_figure(pt, x, varying, "P(exact pattern recovered)", ylim=(-0.03, 1.03))
                paths.append(_save(fig, out / f"pattern_recovery_vs_{x}.png"))
    d = ok[ok["metric"] == "fit_time"]
    if not d.empty and "n" in varying:
        fig = _line_figure(d, "n", varying, "mean fit time (s)", logy=True)
        paths.append(_save(fig, out / "fit_time_vs_n.png"))
    return paths
