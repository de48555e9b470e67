"""Results objects: summary tables and plots of a fitted representation."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

__all__ = ["HierarchicalResults"]


class HierarchicalResults:
    """Summary of a fitted hierarchical representation estimator.

    Parameters
    ----------
    estimator : fitted estimator with ``hierarchy_``, ``loadings_``, ``noise_variances_``
    """

    def __init__(self, estimator):
        self.estimator = estimator
        self.hierarchy = estimator.hierarchy_
        self.loadings = estimator.loadings_
        self.noise_variances = estimator.noise_variances_

    @cached_property
    def pattern(self):
        """Table of structures: level, rank and member modalities (one row per structure)."""
        h = self.hierarchy
        rows = []
        for s in h.structures:
            row = {"structure": h.name(s), "level": h.level(s), "rank": h.rank(s)}
            row.update({m: int(m in s) for m in h.modalities})
            rows.append(row)
        cols = ["structure", "level", "rank", *h.modalities]
        return pd.DataFrame(rows, columns=cols).set_index("structure")

    @cached_property
    def variance_explained(self):
        """Share of each modality's total variance carried by each structure.

        Entry ``(m, S)`` is ``||A_{m,S}||_F^2 / tr(Sigma_mm)`` with the fitted
        ``Sigma_mm = sum_S A_{m,S} A_{m,S}^T + Psi_m``; the column ``noise`` holds
        ``tr(Psi_m) / tr(Sigma_mm)``, so each row sums to 1.
        """
        h = self.hierarchy
        out = pd.DataFrame(0.0, index=list(h.modalities), columns=[h.name(s) for s in h.structures] + ["noise"])
        out.index.name = "modality"
        for m in h.modalities:
            parts = {h.name(s): float(np.sum(self.loadings[s][m] ** 2)) for s in h.structures_of(m)}
            noise = float(np.sum(self.noise_variances[m]))
            total = sum(parts.values()) + noise
            for k, v in parts.items():
                out.loc[m, k] = v / total
            out.loc[m, "noise"] = noise / total
        return out

    def top_features(self, structure, modality, n=10):
        """Features with the largest loading norm on ``structure`` within ``modality``."""
        h = self.hierarchy
        s = h.structure(structure)
        if s not in self.loadings or modality not in self.loadings[s]:
            raise ValueError(f"structure {h.name(s)} has no loadings on modality {modality!r}")
        a = self.loadings[s][modality]
        names = (getattr(self.estimator, "feature_names_", {}) or {}).get(modality)
        if names is None:
            names = [f"{modality}[{j}]" for j in range(a.shape[0])]
        norm = np.linalg.norm(a, axis=1)
        order = np.argsort(norm)[::-1][:n]
        return pd.Series(norm[order], index=[names[j] for j in order], name=f"{h.name(s)} | {modality}")

    def summary(self):
        """Readable text: the pattern, ranks and the variance-explained table."""
        est = self.estimator
        h = self.hierarchy
        lines = [
            f"{type(est).__name__} results",
            "=" * 60,
            f"modalities: {', '.join(f'{m} (p={p})' for m, p in h.dims.items())}",
            f"samples: {getattr(est, 'n_samples_', 'n/a')}",
            f"components: {h.n_components} in {len(h.structures)} structures",
        ]
        for attr in ("n_iter_", "converged_"):
            if hasattr(est, attr):
                lines.append(f"{attr.rstrip('_')}: {getattr(est, attr)}")
        lines += ["", "Sharing pattern", "-" * 60, self.pattern.to_string(), ""]
        lines += [
            "Variance explained (share of tr Sigma_mm)",
            "-" * 60,
            self.variance_explained.to_string(float_format=lambda v: f"{v:.3f}"),
        ]
        return "\n".join(lines)

    def __str__(self):
        return self.summary()

    # --------------------------------------------------------------- plots
    def plot_pattern(self, ax=None):
        """Heat-map of the support matrix (modalities x components, grouped by structure)."""
        import matplotlib.pyplot as plt

        h = self.hierarchy
        if ax is None:
            _, ax = plt.subplots(figsize=(max(4, 0.5 * h.n_components + 2), 0.5 * h.n_modalities + 1.5))
        B = h.support_matrix()
        ax.imshow(B, cmap="Blues", vmin=0, vmax=1.2, aspect="auto")
        ax.set_yticks(range(h.n_modalities), labels=list(h.modalities))
        labels = [h.name(s) for s in h.structures for _ in range(h.rank(s))]
        ax.set_xticks(range(h.n_components), labels=labels, rotation=60, ha="right", fontsize=8)
        edges = np.cumsum([h.rank(s) for s in h.structures])[:-1] - 0.5
        for e in edges:
            ax.axvline(e, color="k", lw=0.8)
        ax.set_title("Sharing pattern (components by structure)")
        return ax

    def plot_variance_explained(self, ax=None):
        """Heat-map of :attr:`variance_explained` with the values written in."""
        import matplotlib.pyplot as plt

        ve = self.variance_explained
        if ax is None:
            _, ax = plt.subplots(figsize=(0.9 * ve.shape[1] + 2, 0.5 * ve.shape[0] + 1.5))
        im = ax.imshow(ve.to_numpy(), cmap="viridis", vmin=0, vmax=max(1e-12, ve.to_numpy().max()), aspect="auto")
        ax.set_yticks(range(ve.shape[0]), labels=list(ve.index))
        ax.set_xticks(range(ve.shape[1]), labels=list(ve.columns), rotation=45, ha="right")
        for i in range(ve.shape[0]):
            for j in range(ve.shape[1]):
                ax.text(j, i, f"{ve.iat[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
        ax.figure.colorbar(im, ax=ax, fraction=0.04)
        ax.set_title("Variance explained per modality x structure")
        return ax
