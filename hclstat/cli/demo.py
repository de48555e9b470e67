"""``hclstat demo``: simulate design D1, learn the pattern, and compare the fit with the truth."""

from __future__ import annotations

import numpy as np

from ..model.designs import D1_DIMS
from . import shared
from .base import EXIT_OK, add_common, add_estimator, add_figures, add_output, positive_int, stages

#: the demo's design: reference design D1 (one global, one {a,b}, one specific per modality)
DEMO_DIMS = dict(D1_DIMS)
DEMO_LOADING_SCALE = 0.3


def add_parser(sub):
    dims = "/".join(map(str, DEMO_DIMS.values()))
    p = sub.add_parser("demo", help="simulate the reference design, learn the pattern, write results and figures",
                       description=f"Simulate design D1 (modalities {'/'.join(DEMO_DIMS)} with p = {dims}, one "
                                   "global, one {a,b} and one specific component per modality, loading scale "
                                   f"{DEMO_LOADING_SCALE}, unit noise), fit HCL with the pattern learned, and write "
                                   "the fit outputs plus a comparison with the truth.")
    p.add_argument("--n", type=positive_int, default=2000, help="samples (default: 2000)")
    add_estimator(p, pattern=False)
    p.set_defaults(estimator="hcl", hierarchy=None)
    add_output(p, default="demo_output")
    add_figures(p)
    add_common(p)
    p.set_defaults(func=run)
    return p


def comparison(estimator, model):
    """Pattern scores and loading errors of a fit against the simulation truth."""
    import pandas as pd

    from ..metrics import loading_errors, pattern_scores

    est_h, true_h = estimator.hierarchy_, model.hierarchy
    scores = pattern_scores(est_h, true_h)
    rows = []
    for s, err in scores["rank_errors"].items():
        rows.append({"structure": true_h.name(s), "level": true_h.level(s), "true_rank": true_h.rank(s),
                     "estimated_rank": est_h.rank(s), "rank_error": err})
    pattern = pd.DataFrame(rows).set_index("structure")
    errors = loading_errors(estimator.loadings_, model.loadings)
    rows = []
    for s in true_h.structures:
        for m in sorted(s, key=true_h.index):
            rows.append({"structure": true_h.name(s), "modality": m,
                         "sin_theta": errors.get((s, m), float("nan"))})
    loadings = pd.DataFrame(rows)
    text = "\n".join([
        "Learned vs true hierarchy",
        "-" * 60,
        f"exact pattern recovery: {scores['exact']}",
        f"structure precision: {scores['structure_precision']:.3f}   recall: {scores['structure_recall']:.3f}   "
        f"support Hamming distance: {scores['support_hamming']}",
        "",
        pattern.to_string(),
        "",
        "Loading subspace error (sin-theta distance to the true col(A_{m,S}); NaN: structure not found)",
        "-" * 60,
        loadings.to_string(index=False, float_format=lambda v: f"{v:.3f}"),
    ])
    return scores, pattern, loadings, text


def _simulate(n, seed):
    """The D1 truth and ``n`` samples of it as tables with a ``sample`` ID column."""
    import pandas as pd

    from ..model.designs import d1_model

    rng = np.random.default_rng(seed)
    model = d1_model(DEMO_LOADING_SCALE, 1.0, dims=DEMO_DIMS, noise_model="isotropic", random_state=rng)
    arrays, _ = model.sample(n, random_state=rng)
    ids = [f"s{i:05d}" for i in range(n)]
    frames = {}
    for m, x in arrays.items():
        frame = pd.DataFrame(x, columns=[f"{m}{j + 1}" for j in range(x.shape[1])])
        frame.insert(0, "sample", ids)
        frames[m] = frame
    return model, frames


def run(args, console):
    from ..io import atomic_directory, check_output_target, load_views

    check_output_target(args.out, overwrite=args.overwrite)
    with stages(console, ["simulate", "fit", "scores", "write"], "hclstat demo") as step:
        model, frames = _simulate(args.n, args.seed)
        truth = model.hierarchy
        # the model's own scale, so the loadings compare with the truth (moments centre anyway)
        data = load_views(frames, id_column="sample", preprocessing={m: "raw" for m in frames})
        console.info(f"simulated {args.n} samples of {truth!r}")
        step("simulate")
        estimator = shared.make_estimator(args, None)
        shared.fit_estimator(estimator, data.views, console)
        step("fit")
        scores = estimator.transform(data.views)
        step("scores")
        _, pattern, loadings, text = comparison(estimator, model)
        with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
            shared.write_fit_outputs(tmp, estimator, scores, data, args, extra_summary=text)
            shared.write_json(tmp / "true_hierarchy.json", truth.to_dict())
            pattern.to_csv(tmp / "pattern_comparison.csv")
            loadings.to_csv(tmp / "loading_errors.csv", index=False)
            (tmp / "comparison.txt").write_text(text + "\n")
            (tmp / "data").mkdir()
            for m, frame in frames.items():
                frame.to_csv(tmp / "data" / f"{m}.csv", index=False)
            if not args.no_figures:
                from ..plotting import pattern_comparison_figure, save_figure

                save_figure(pattern_comparison_figure(truth, estimator.hierarchy_),
                            tmp / "figures" / "pattern_true_vs_estimated.png")
        step("write")
    console.info(text)
    console.result(f"wrote {args.out}")
    return EXIT_OK
