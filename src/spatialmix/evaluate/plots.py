"""Benchmark figures (matplotlib, no Qt): the MIMA paper's Fig. 3B (LOOCV F1 per representation), 3C (predicted
vs pathologist annotation maps), 3F (bio conservation vs batch correction) and the translation R^2
distributions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

KIND_COLORS = {"raw": "#7f7f7f", "baseline": "#1f77b4", "peer": "#2ca02c", "model": "#d62728"}
AGREEMENT_COLORS = {"agree": "#2ca02c", "disagree": "#d62728", "unlabelled": "#c8c8c8", "excluded": "#8c8c8c"}
METHOD_COLORS = {"model": "#d62728", "ridge": "#ff7f0e", "knn": "#9467bd", "own_centroid": "#1f77b4",
                 "other_centroids": "#bdbdbd"}
METHOD_LABELS = {"model": "model (held-out fold)", "ridge": "ridge regression (CV alpha)", "knn": "kNN regression",
                 "own_centroid": "centroid of own annotation (without the spot)",
                 "other_centroids": "centroid of the other annotations"}


def _place_labels(ax, labels, xs, ys, fontsize: float = 8) -> None:
    """Label points without overlaps: each label takes the first of a few offsets whose box (estimated from
    its length, in points) overlaps neither an earlier label nor a point."""
    fig = ax.figure
    fig.canvas.draw()
    to_pt = 72.0 / fig.dpi
    pts = [np.asarray(ax.transData.transform((x, y))) * to_pt for x, y in zip(xs, ys)]
    boxes: list[tuple[float, float, float, float]] = []
    candidates = [(9, 4), (9, -12), (9, 16), (9, -24), (9, 28), (9, -36)]
    for label, p in zip(labels, pts):
        w, h = 0.55 * fontsize * len(label), fontsize
        chosen = None
        for dx, dy in candidates + [(-w - 9, 4), (-w - 9, -12)]:
            box = (p[0] + dx, p[1] + dy, p[0] + dx + w, p[1] + dy + h)
            free = all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in boxes)
            free &= all(not (box[0] - 3 < q[0] < box[2] + 3 and box[1] - 3 < q[1] < box[3] + 3)
                        for q in pts if q is not p)
            if free:
                chosen = (dx, dy, box)
                break
        dx, dy, box = chosen or (6, 3, (p[0] + 6, p[1] + 3, p[0] + 6 + w, p[1] + 3 + h))
        boxes.append(box)
        ax.annotate(label, (xs[len(boxes) - 1], ys[len(boxes) - 1]), xytext=(dx, dy), textcoords="offset points",
                    fontsize=fontsize, va="bottom" if dy >= 0 else "top",
                    arrowprops={"arrowstyle": "-", "lw": 0.6, "color": "0.35", "shrinkA": 0, "shrinkB": 4})


def plot_scib_scatter(metrics: dict):
    """Bio conservation (y) against batch correction (x), one point per representation (Fig. 3F)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 6), constrained_layout=True)
    reps = {n: e for n, e in metrics["representations"].items() if "scib" in e}
    xs = [e["scib"]["Batch correction"] for e in reps.values()]
    ys = [e["scib"]["Bio conservation"] for e in reps.values()]
    lo_x, hi_x = min(xs) - 0.05, max(xs) + 0.08
    lo_y, hi_y = min(ys) - 0.03, max(ys) + 0.03
    gx, gy = np.meshgrid(np.linspace(lo_x, hi_x, 50), np.linspace(lo_y, hi_y, 50))
    cs = ax.contour(gx, gy, 0.4 * gx + 0.6 * gy, levels=8, colors="#dddddd", linewidths=0.8)
    ax.clabel(cs, fmt="total %.2f", fontsize=7)
    ax.set_xlim(lo_x, hi_x)
    ax.set_ylim(lo_y, hi_y)
    for (name, e), x, y in zip(reps.items(), xs, ys):
        ax.scatter(x, y, s=70, color=KIND_COLORS.get(e["kind"], "k"), edgecolor="k", zorder=3)
    _place_labels(ax, [f"{n} ({e['scib']['Total']:.2f})" for n, e in reps.items()], xs, ys)
    for kind, c in KIND_COLORS.items():
        if any(e["kind"] == kind for e in reps.values()):
            ax.scatter([], [], color=c, edgecolor="k", label={"raw": "raw inputs", "baseline": "baselines",
                                                            "peer": "peers", "model": "models"}[kind])
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("batch correction (scIB aggregate)")
    ax.set_ylabel("bio conservation (scIB aggregate)")
    ax.set_title(f"scIB scores vs `{metrics['annotation_key']}` ({metrics['n_evaluated_spots']} "
                 f"{metrics.get('rows', 'spots')}; "
                 "grey lines: total = 0.4 batch + 0.6 bio)", fontsize=9)
    return fig


def plot_f1(results: dict, schemes=("loocv", "4cv"), kinds: dict | None = None):
    """Per-(fold, class) F1 of every representation, sorted by mean (Fig. 3B), one panel per scheme."""
    import matplotlib.pyplot as plt

    titles = {"loocv": "leave one sample out", "4cv": "within-sample 4-fold",
              "transfer": "labelled sources -> target samples"}
    fig, axes = plt.subplots(1, len(schemes), figsize=(6.5 * len(schemes), 5.5), constrained_layout=True,
                             squeeze=False)
    for ax, scheme in zip(axes[0], schemes):
        data = {n: r[scheme].folds["f1"].to_numpy() for n, r in results.items() if scheme in r}
        order = sorted(data, key=lambda n: np.mean(data[n]) if len(data[n]) else -1)
        vals = [data[n] for n in order]
        bp = ax.boxplot(vals, vert=False, widths=0.6, patch_artist=True, showfliers=False)
        for patch, n in zip(bp["boxes"], order):
            kind = (kinds or {}).get(n) or ("raw" if n.startswith("raw_") else
                                            ("baseline" if n.startswith(("pca_", "harmony")) else "model"))
            patch.set_facecolor(KIND_COLORS[kind])
            patch.set_alpha(0.45)
        rng = np.random.default_rng(0)
        for i, v in enumerate(vals, start=1):
            ax.scatter(v, i + rng.uniform(-0.18, 0.18, len(v)), s=9, color="k", alpha=0.6, zorder=3)
            if len(v):
                ax.scatter([np.mean(v)], [i], marker="D", s=40, color="white", edgecolor="k", zorder=4)
                ax.annotate(f"{np.mean(v):.2f}", (1.0, i), xytext=(4, -3), textcoords="offset points", fontsize=8)
        ax.set_yticks(range(1, len(order) + 1), order, fontsize=9)
        ax.set_xlim(0, 1.0)
        ax.set_xlabel("F1 per (test fold, class with >= 3 spots); diamond: mean")
        ax.set_title(f"annotation prediction, {titles.get(scheme, scheme)}", fontsize=10)
    return fig


def plot_annotation_map(sdata, sample: str, result, *, annotation_key: str = "pathologist"):
    """One sample: the pathologist's annotation on the H&E, the predicted one with the same colours, and
    where they agree (Fig. 3C)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from spatialmix.plotting import (UNLABELLED_COLOR, draw_he, figure_extent, panel_axes, spot_patches,
                                     category_colors, spot_xy, square_panel)

    table = sdata.tables["rna"]
    obs = table.obs
    rows = np.flatnonzero(obs["sample"].astype(str).to_numpy() == sample)
    xy = spot_xy(sdata, sample)[obs["spot_id"].to_numpy()[rows]]
    bounds, res_um = square_panel(xy)
    extent = figure_extent(bounds, res_um)
    col = obs[annotation_key]
    cats = list(col.cat.categories) if hasattr(col, "cat") else sorted(col.dropna().astype(str).unique())
    palette = category_colors(cats)
    names = obs.index[rows]
    truth = col.iloc[rows].astype(object)
    pred = result.prediction.reindex(names)
    agree = result.agreement.reindex(names).astype(object)
    summ = result.summary

    def colours(values):
        return [palette.get(str(v), UNLABELLED_COLOR) if pd.notna(v) else UNLABELLED_COLOR for v in values]

    evaluated = agree.notna().to_numpy()
    fig, axes = plt.subplots(1, 3, figsize=(18, 6.4), constrained_layout=True)
    for ax in axes:
        draw_he(ax, sdata, sample, bounds, res_um, extent)
        panel_axes(ax, extent)
    spot_patches(axes[0], xy, facecolors=colours(truth), edgecolors="none")
    axes[0].set_title(f"pathologist's annotation ({annotation_key})", fontsize=11)
    spot_patches(axes[1], xy[evaluated], facecolors=colours(pred[evaluated]), edgecolors="none")
    axes[1].set_title(f"predicted from {result.representation} ({result.scheme}: model not trained on "
                      f"{'this sample' if result.scheme == 'loocv' else 'this spot'})", fontsize=11)
    agree_cols = [AGREEMENT_COLORS[a] for a in agree[evaluated]]
    spot_patches(axes[2], xy[evaluated], facecolors=agree_cols, edgecolors="none")
    for ax in axes[1:]:  # spots the representation does not cover: hollow
        spot_patches(ax, xy[~evaluated], facecolors="none", edgecolors="#555555", lw=0.6)
    n_ok = int((agree == "agree").sum())
    n_scored = int(agree.isin(["agree", "disagree"]).sum())
    axes[2].set_title(f"agreement: {n_ok}/{n_scored} spots agree in {sample} "
                      f"(all samples: macro F1 {summ['f1']:.2f})", fontsize=11)
    present = [c for c in cats if (truth.astype(str) == c).any() or (pred.astype(str) == c).any()]
    handles = [Patch(color=palette[c], label=c + (" (excluded)" if c in result.excluded else "")) for c in present]
    handles.append(Patch(color=UNLABELLED_COLOR, label="unlabelled"))
    hollow = Patch(facecolor="none", edgecolor="#555555", label="not evaluated\n(a modality missing)")
    axes[1].legend(handles=handles + [hollow], loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
                   frameon=False)
    axes[2].legend(handles=[Patch(color=v, label=k) for k, v in AGREEMENT_COLORS.items()] + [hollow],
                   loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    fig.suptitle(f"{sample}: predicted vs pathologist annotation", fontsize=13)
    return fig


def draw_confusion(ax, cm: pd.DataFrame, *, normalize: bool = True, title: str = "", fontsize: int = 9):
    """Draw a pathologist (rows) x predicted (columns) count table on ``ax``: row-normalised colours (recall on
    the diagonal) with the counts written in each cell. Returns the image (for a colourbar)."""
    counts = cm.to_numpy()
    frac = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    n = len(cm)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, f"{counts[i, j]}", ha="center", va="center", fontsize=fontsize - 1,
                        color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks(range(n), cm.columns, rotation=40, ha="right", fontsize=fontsize)
    ax.set_yticks(range(n), cm.index, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("pathologist")
    if title:
        ax.set_title(title, fontsize=fontsize + 1)
    return im


def plot_confusion(result, *, normalize: bool = True):
    """Pathologist (rows) x predicted (columns) over the scored spots, row-normalised (recall on the
    diagonal), with the counts written in each cell."""
    import matplotlib.pyplot as plt

    n = len(result.confusion)
    fig, ax = plt.subplots(figsize=(1.0 * n + 3, 0.8 * n + 2), constrained_layout=True)
    s = result.summary
    im = draw_confusion(ax, result.confusion, normalize=normalize,
                        title=f"{result.representation}, {result.scheme}: {s['n_spots']} spots, accuracy "
                              f"{s['overall_accuracy']:.2f}, macro F1 {s['f1']:.2f}")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the pathologist's class" if normalize else "spots")
    return fig


def plot_translation(translation, *, name: str = "mima"):
    """Per-spot R^2 distributions of every direction: the model's held-out predictions against both
    annotation-centroid baselines."""
    import matplotlib.pyplot as plt

    dirs = list(translation.r2_spot)
    methods = [m for m in METHOD_COLORS if any(m in translation.r2_spot[d] for d in dirs)]
    fig, ax = plt.subplots(figsize=(max(9, 0.45 * len(methods) * len(dirs) + 2), 5.8), constrained_layout=True)
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        vals = [translation.r2_spot[d][method][np.isfinite(translation.r2_spot[d][method])]
                if method in translation.r2_spot[d] else np.array([]) for d in dirs]
        pos = np.arange(len(dirs)) + (j - (len(methods) - 1) / 2) * width
        bp = ax.boxplot(vals, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=False)
        for patch in bp["boxes"]:
            patch.set_facecolor(METHOD_COLORS[method])
        for med in bp["medians"]:
            med.set_color("k")
        ax.bar([0], [0], color=METHOD_COLORS[method], label=METHOD_LABELS[method])
    ax.set_xticks(np.arange(len(dirs)), [d.replace("->", "\n-> ") for d in dirs], fontsize=8)
    for i, d in enumerate(dirs):
        src, tgt = d.split("->")
        if src == tgt:
            ax.axvspan(i - 0.45, i + 0.45, color="#f3f3f3", zorder=0)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Pearson R^2 per spot (top HVF of the target)")
    ax.set_title(f"{name}: translation fidelity under 4-fold CV (shaded: reconstruction)", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return fig


def save_benchmark_figures(metrics, results, translations, sdata, out, *, annotation_key: str = "pathologist",
                           map_representation: str | None = None, dpi: int = 110) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(out)
    written = []

    def save(fig, name):
        path = out / name
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        written.append(path)

    if any("scib" in e for e in metrics["representations"].values()):
        save(plot_scib_scatter(metrics), "scib_bio_vs_batch.png")
    scored = {n: r for n, r in results.items() if r}
    if scored:
        schemes = tuple(s for s in ("loocv", "4cv", "transfer") if any(s in r for r in scored.values()))
        kinds = {n: e["kind"] for n, e in metrics["representations"].items()}
        save(plot_f1(scored, schemes, kinds), "annotation_f1.png")
        rep = map_representation if map_representation in scored else next(iter(scored))
        scheme = "loocv" if "loocv" in scored[rep] else next(iter(scored[rep]))
        save(plot_confusion(scored[rep][scheme]), f"confusion_{rep}.png")
        if sdata is not None:  # annotation maps need the tissue
            for sample in metrics["samples"]:
                save(plot_annotation_map(sdata, sample, scored[rep][scheme], annotation_key=annotation_key),
                     f"annotations_{rep}_{sample}.png")
    for name, tr in translations.items():
        save(plot_translation(tr, name=name), f"translation_r2_{name}.png")
    return written
