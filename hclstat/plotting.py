"""Figures of a fitted representation, written to files.

Every function builds a :class:`matplotlib.figure.Figure` directly (no pyplot
state, so nothing depends on the interactive backend) and matplotlib is
imported only when a figure is made. ``write_figures`` renders with Agg.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "plot_pattern",
    "pattern_figure",
    "variance_explained_figure",
    "top_features_figure",
    "pattern_comparison_figure",
    "save_figure",
    "write_figures",
]

#: file names written by :func:`write_figures`
FIGURES = {
    "pattern": "pattern.png",
    "variance_explained": "variance_explained.png",
    "top_features": "top_features.png",
}


def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _colormap(name, bad):
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=bad)


def save_figure(fig, path, *, dpi=120):
    """Render ``fig`` to ``path`` with the Agg canvas (format from the suffix)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi)
    return Path(path)


def plot_pattern(hierarchy, ax, *, title="Sharing pattern"):
    """Support matrix of ``hierarchy`` on ``ax``: modalities x components, grouped by structure.

    Cell ``(m, j)`` is filled when component ``j`` loads on modality ``m``;
    vertical lines separate structures, whose names and ranks label the columns.
    """
    h = hierarchy
    K = h.n_components
    if K == 0:
        ax.text(0.5, 0.5, "no latent component", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks(range(h.n_modalities), labels=list(h.modalities))
        ax.set_xticks([])
        ax.set_title(title)
        return ax
    B = h.support_matrix()
    ax.imshow(B, cmap="Blues", vmin=0, vmax=1.25, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(h.n_modalities), labels=list(h.modalities))
    centres, labels, start = [], [], 0
    for s in h.structures:
        k = h.rank(s)
        centres.append(start + (k - 1) / 2)
        labels.append(f"{h.name(s)}\n×{k}" if k > 1 else h.name(s))
        start += k
    ax.set_xticks(centres, labels=labels, rotation=45 if len(labels) > 4 else 0,
                  ha="right" if len(labels) > 4 else "center", fontsize=8)
    for e in np.cumsum([h.rank(s) for s in h.structures])[:-1] - 0.5:
        ax.axvline(e, color="k", lw=0.8)
    ax.set_xticks(np.arange(-0.5, K, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, h.n_modalities, 1), minor=True)
    ax.grid(which="minor", color="w", lw=0.5)
    ax.tick_params(which="minor", length=0)
    ax.set_title(title)
    return ax


def pattern_figure(hierarchy, *, title="Sharing pattern (modalities x components)"):
    """A figure with :func:`plot_pattern`."""
    fig = _figure(max(4.0, 0.45 * hierarchy.n_components + 2.5), 0.45 * hierarchy.n_modalities + 2.0)
    plot_pattern(hierarchy, fig.add_subplot(), title=title)
    return fig


def variance_explained_figure(results):
    """Heat-map of ``results.variance_explained`` (modality x structure, plus noise)."""
    h = results.hierarchy
    ve = results.variance_explained
    fig = _figure(0.9 * ve.shape[1] + 2.5, 0.5 * ve.shape[0] + 2.0)
    ax = fig.add_subplot()
    values = ve.to_numpy()
    # a structure that does not load on a modality has no share there: grey, not 0
    by_name = {h.name(s): s for s in h.structures}
    absent = np.array([[col in by_name and m not in by_name[col] for col in ve.columns] for m in ve.index],
                      dtype=bool).reshape(values.shape)
    vmax = max(1e-12, float(values.max())) if values.size else 1.0
    cmap = _colormap("viridis", bad="0.85")
    im = ax.imshow(np.ma.masked_array(values, absent), cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
    ax.set_yticks(range(ve.shape[0]), labels=list(ve.index))
    ax.set_xticks(range(ve.shape[1]), labels=list(ve.columns), rotation=45, ha="right")
    for i in range(ve.shape[0]):
        for j in range(ve.shape[1]):
            if absent[i, j]:
                continue
            v = ve.iat[i, j]
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="k" if v > 0.6 * vmax else "w")
    fig.colorbar(im, ax=ax, fraction=0.05, label="share of total variance")
    ax.set_title("Variance explained (modality x structure)")
    return fig


def top_features_figure(results, n=10):
    """One panel per structure: the ``n`` features with the largest loading norm.

    Features of all member modalities compete (bars coloured by modality); the
    norm is that of the feature's row of ``A_{m,S}``, comparable across
    modalities when the data were scaled.
    """
    h = results.hierarchy
    structures = list(h.structures)
    ncols = min(3, max(1, len(structures)))
    nrows = max(1, int(np.ceil(len(structures) / ncols)))
    fig = _figure(4.2 * ncols, 0.28 * n * nrows + 1.2 * nrows + 0.5)
    colours = {m: f"C{i % 10}" for i, m in enumerate(h.modalities)}
    if not structures:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no latent component", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, s in zip(axes, structures):
        entries = []
        for m in sorted(s, key=h.index):
            top = results.top_features(s, m, n=n)
            entries += [(float(v), m, str(name)) for name, v in top.items()]
        entries.sort(key=lambda e: -e[0])
        entries = entries[:n][::-1]
        y = np.arange(len(entries))
        ax.barh(y, [e[0] for e in entries], color=[colours[e[1]] for e in entries])
        multi = len(s) > 1
        ax.set_yticks(y, labels=[f"{e[1]}: {e[2]}" if multi else e[2] for e in entries], fontsize=7)
        ax.set_title(f"{h.name(s)} (rank {h.rank(s)})", fontsize=9)
        ax.set_xlabel("loading norm", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    for ax in axes[len(structures):]:
        ax.set_axis_off()
    fig.suptitle("Top-loading features per structure")
    return fig


def pattern_comparison_figure(true_hierarchy, estimated_hierarchy):
    """True and estimated sharing patterns side by side."""
    K = max(true_hierarchy.n_components, estimated_hierarchy.n_components)
    fig = _figure(2 * max(3.5, 0.45 * K + 2.0), 0.45 * true_hierarchy.n_modalities + 2.2)
    ax1, ax2 = fig.subplots(1, 2)
    plot_pattern(true_hierarchy, ax1, title="true pattern")
    plot_pattern(estimated_hierarchy, ax2, title="estimated pattern")
    return fig


def write_figures(results, directory, *, top=10, dpi=120):
    """Write the standard figures of a fitted representation.

    Files (see ``FIGURES``): ``pattern.png`` (support matrix),
    ``variance_explained.png`` (modality x structure shares) and
    ``top_features.png`` (top-loading features per structure).

    Returns
    -------
    list of pathlib.Path
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    figures = {
        "pattern": pattern_figure(results.hierarchy),
        "variance_explained": variance_explained_figure(results),
        "top_features": top_features_figure(results, n=top),
    }
    return [save_figure(fig, directory / FIGURES[key], dpi=dpi) for key, fig in figures.items()]
