"""Figures of a project in each sample's micrometre frame (overlays used by the demo report and docs).

The sample-frame helpers (bounds, spot centres and geometry, rendering on a grid, class colours) live in
:mod:`spatialmix.frames` and are re-exported here; the drawing helpers ``draw_he``, ``figure_extent``,
``panel_axes`` and ``spot_patches`` are shared with ``evaluate.plots``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spatialmix.frames import (  # noqa: F401 - re-exported: figures and callers import them from here too
    PALETTE, UNLABELLED_COLOR, category_colors, render_image, render_spots, sample_bounds, spot_geometry, spot_xy,
    square_panel,
)
from spatialmix.data import COVERED_KEYS
from spatialmix.project import samples_of


def _tissue_contour(sdata, sample, bounds, resolution_um):
    """Tissue mask of the Visium image on the figure grid (the registration's own mask, holes filled)."""
    name = f"{sample}_visium_hires"
    if name not in sdata.images:
        return None
    from scipy import ndimage

    from spatialmix.registration import tissue_mask

    rgb = render_image(sdata, name, sample, bounds=bounds, resolution_um=resolution_um)
    return ndimage.binary_fill_holes(tissue_mask(np.nan_to_num(rgb, nan=255.0).astype(np.uint8), "rgb"))


def spot_patches(ax, xy, *, facecolors="none", edgecolors="k", values=None, cmap=None, radius=27.5, lw=1.0):
    """Draw spots as true 55 um circles (data units), so their size is right at any zoom."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Circle

    coll = PatchCollection([Circle((x, y), radius) for x, y in xy], linewidths=lw)
    if values is not None:
        coll.set_array(np.asarray(values, dtype=float))
        coll.set_cmap(cmap)
        coll.set_edgecolor("none")
    else:
        coll.set_facecolor(facecolors)
        coll.set_edgecolor(edgecolors)
    ax.add_collection(coll)
    return coll


def figure_extent(bounds, resolution_um: float) -> tuple[float, float, float, float]:
    """imshow extent (left, right, bottom, top) of images rendered on the ``resolution_um`` grid of ``bounds``."""
    return (bounds[0], bounds[0] + resolution_um * np.ceil((bounds[2] - bounds[0]) / resolution_um),
            bounds[1] + resolution_um * np.ceil((bounds[3] - bounds[1]) / resolution_um), bounds[1])


def draw_he(ax, sdata, sample: str, bounds, resolution_um: float, extent) -> None:
    """The sample's H&E image (white where there is none) in the sample frame."""
    if f"{sample}_he" in sdata.images:
        he = render_image(sdata, f"{sample}_he", sample, bounds=bounds, resolution_um=resolution_um)
        ax.imshow(np.nan_to_num(he, nan=255).astype(np.uint8), extent=extent)


def _draw_tic(fig, ax, sdata, sample: str, bounds, resolution_um: float, extent, *, label: str, shrink: float) -> None:
    """The sample's MSI TIC image (transparent off the raster) with a colour bar."""
    if f"{sample}_msi_tic" in sdata.images:
        tic = render_image(sdata, f"{sample}_msi_tic", sample, bounds=bounds, resolution_um=resolution_um)[..., 0]
        im = ax.imshow(np.ma.masked_invalid(tic), extent=extent, cmap="magma", interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=shrink, label=label)


def _registration_label(name: str, record: dict) -> str:
    what = "landmark RMS" if record.get("method") == "landmarks" else "boundary residual"
    return f"{name} registered ({record.get('method')}), {what} {record.get('rms_um', float('nan')):.1f} um"


def plot_overlay(sdata, sample: str, *, annotation_key: str = "pathologist", resolution_um: float | None = None):
    """Three panels for one sample: H&E with spots by annotation, MSI TIC, spots by total counts.

    The Visium tissue outline (from the Space Ranger image) is drawn on every panel, so registration errors
    show as H&E or MSI tissue edges that do not follow it.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    bounds = sample_bounds(sdata, sample)
    if resolution_um is None:
        resolution_um = max(2.0, (bounds[2] - bounds[0]) / 800)
    extent = figure_extent(bounds, resolution_um)
    contour = _tissue_contour(sdata, sample, bounds, resolution_um)
    xy = spot_xy(sdata, sample)
    rna = sdata.tables["rna"]
    obs = rna.obs[rna.obs["sample"].astype(str) == sample].sort_values("spot_id")
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.4), constrained_layout=True)
    reg = sdata.attrs.get("spatialmix", {}).get("registration", {}).get(sample, {})

    def outline(ax):
        if contour is not None:
            ax.contour(np.linspace(extent[0], extent[1], contour.shape[1]),
                       np.linspace(extent[3], extent[2], contour.shape[0]), contour.astype(float),
                       levels=[0.5], colors="cyan", linewidths=0.8)

    ax = axes[0]
    draw_he(ax, sdata, sample, bounds, resolution_um, extent)
    title = "H&E + pathologist annotation"
    if "he" in reg:
        title += "\n" + _registration_label("H&E", reg["he"])
    if annotation_key in obs:
        cats = list(rna.obs[annotation_key].cat.categories)
        palette = category_colors(cats)
        lab = obs[annotation_key]
        colors = [palette.get(str(v), UNLABELLED_COLOR) if isinstance(v, str) else UNLABELLED_COLOR for v in lab]
        spot_patches(ax, xy[obs["spot_id"].to_numpy()], edgecolors=colors, lw=1.2)
        present = [c for c in cats if (lab == c).any()]
        handles = [Patch(color=palette[str(c)], label=c) for c in present]
        handles.append(Patch(color=UNLABELLED_COLOR, label="unlabelled"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    outline(ax)
    ax.set_title(title, fontsize=10)

    ax = axes[1]
    _draw_tic(fig, ax, sdata, sample, bounds, resolution_um, extent, label="MSI TIC", shrink=0.7)
    title = "MSI total ion current"
    if "msi" in reg:
        title += "\n" + _registration_label("MSI", reg["msi"])
    outline(ax)
    ax.set_title(title, fontsize=10)

    ax = axes[2]
    counts = rna.layers["counts"] if "counts" in rna.layers else rna.X
    rows = rna.obs_names.get_indexer(obs.index)
    total = np.asarray(counts[rows].sum(axis=1)).ravel()
    sc = spot_patches(ax, xy[obs["spot_id"].to_numpy()], values=total, cmap="viridis")
    fig.colorbar(sc, ax=ax, shrink=0.7, label="RNA total counts per spot")
    outline(ax)
    ax.set_title("Visium spots (55 um)", fontsize=10)
    for ax in axes:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("equal")
        ax.set_xlabel("x (um)")
        ax.set_facecolor("white")
    axes[0].set_ylabel("y (um)")
    fig.suptitle(f"{sample} (cyan: Visium tissue outline)", fontsize=12)
    return fig


def save_overlays(sdata, out_dir: str | Path, *, annotation_key: str = "pathologist", dpi: int = 110) -> list[Path]:
    """Write ``overlay_<sample>.png`` for every sample; returns the paths."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for sample in samples_of(sdata):
        fig = plot_overlay(sdata, sample, annotation_key=annotation_key)
        path = out_dir / f"overlay_{sample}.png"
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        paths.append(path)
    return paths


def panel_axes(ax, extent):
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor("white")


def plot_results(sdata, sample: str, *, key: str = "mima", gene: str | None = None, mz: str | None = None,
                 resolution_um: float | None = None):
    """One sample's model outputs (the paper's Fig. 2D-G and its imputation panels).

    Top row: H&E, MSI TIC, 3D-RGB colouring of the raw MSI and of the batch-corrected MSI (UMAP axes -> R, G,
    B; the same colour means a similar spectrum across samples). Bottom row: a measured gene next to the same
    gene imputed from MSI + H&E, and a measured m/z next to the same m/z imputed from RNA + H&E (each with its
    own colour scale; the Pearson r between them is in the title). Grey spots: the modality was not measured there.
    """
    import matplotlib.pyplot as plt

    xy_all = spot_xy(sdata, sample)
    in_tissue = sdata.tables["rna"].obs
    in_tissue = in_tissue.loc[in_tissue["sample"].astype(str) == sample, "spot_id"].to_numpy()
    bounds, default_res = square_panel(xy_all[in_tissue])
    resolution_um = resolution_um or default_res
    extent = figure_extent(bounds, resolution_um)
    fig, axes = plt.subplots(2, 4, figsize=(19, 9.6), constrained_layout=True)

    def rows_of(table):
        t = sdata.tables[table]
        sel = np.flatnonzero(t.obs["sample"].astype(str).to_numpy() == sample)
        order = np.argsort(t.obs["spot_id"].to_numpy()[sel], kind="stable")
        sel = sel[order]
        return sel, xy_all[t.obs["spot_id"].to_numpy()[sel]]

    draw_he(axes[0, 0], sdata, sample, bounds, resolution_um, extent)
    axes[0, 0].set_title("H&E", fontsize=11)
    _draw_tic(fig, axes[0, 1], sdata, sample, bounds, resolution_um, extent, label="TIC", shrink=0.6)
    axes[0, 1].set_title("MSI total ion current", fontsize=11)

    msi = sdata.tables.get("msi")
    for ax, name, title in ((axes[0, 2], "X_msi_rgb", "raw MSI, 3D-UMAP RGB"),
                            (axes[0, 3], f"X_{key}_corrected_msi_rgb", f"{key.upper()} batch-corrected MSI, 3D-UMAP RGB")):
        if msi is not None and name in msi.obsm:
            sel, xy = rows_of("msi")
            rgb = np.asarray(msi.obsm[name])[sel]
            ok = np.isfinite(rgb).all(axis=1)
            colors = np.where(ok[:, None], np.nan_to_num(rgb), np.array([[0.85, 0.85, 0.85]]))
            spot_patches(ax, xy, facecolors=np.clip(colors, 0, 1), edgecolors="none", lw=0)
        ax.set_title(title, fontsize=11)

    def pair(ax_m, ax_i, table, layer, feature, label, source_label):
        t = sdata.tables[table]
        if layer not in t.layers:
            ax_m.set_visible(False)
            ax_i.set_visible(False)
            return
        j = int(t.var_names.get_loc(feature))
        sel, xy = rows_of(table)
        measured = np.asarray(t.X[:, j].toarray() if hasattr(t.X, "toarray") else t.X[:, j]).ravel()
        if table == "msi":
            measured = np.log1p(measured)
        measured = measured[sel]
        covered_key = COVERED_KEYS.get(table)
        covered = t.obs[covered_key].to_numpy(bool)[sel] if covered_key in t.obs else np.ones(len(sel), bool)
        imputed = np.asarray(t.layers[layer][:, j]).ravel()[sel]
        vals = measured[covered]
        vmin, vmax = (np.percentile(vals, [1, 99]) if vals.size else (0.0, 1.0))
        if vmax <= vmin:
            vmax = vmin + 1e-6
        grey = np.array([[0.85, 0.85, 0.85, 1.0]])
        cmap = plt.get_cmap("viridis")
        norm = plt.Normalize(vmin, vmax)
        col_m = np.where(covered[:, None], cmap(norm(measured)), grey)
        spot_patches(ax_m, xy, facecolors=col_m, edgecolors="none", lw=0)
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax_m, shrink=0.6, label=label)
        # imputations regress towards the mean: on the measured scale they look flat, so they get their own
        # colour scale (1st-99th percentile) and the correlation is printed
        lo, hi = np.percentile(imputed, [1, 99])
        norm_i = plt.Normalize(lo, hi if hi > lo else lo + 1e-6)
        spot_patches(ax_i, xy, facecolors=cmap(norm_i(imputed)), edgecolors="none", lw=0)
        fig.colorbar(plt.cm.ScalarMappable(norm=norm_i, cmap=cmap), ax=ax_i, shrink=0.6, label=f"imputed {label}")
        r = np.corrcoef(measured[covered], imputed[covered])[0, 1] if covered.sum() > 2 else np.nan
        ax_m.set_title(f"measured {feature}", fontsize=11)
        ax_i.set_title(f"imputed {feature} from {source_label}\n(Pearson r = {r:.2f} on this sample)", fontsize=11)

    rna = sdata.tables.get("rna")
    if rna is not None and gene is not None:
        from spatialmix.conventions import translation_layer

        pair(axes[1, 0], axes[1, 1], "rna", translation_layer(key, ["msi", "morphology"]), gene, "log1p normalised expression",
             "MSI + H&E")
    else:
        axes[1, 0].set_visible(False)
        axes[1, 1].set_visible(False)
    if msi is not None and mz is not None:
        from spatialmix.conventions import translation_layer

        pair(axes[1, 2], axes[1, 3], "msi", translation_layer(key, ["rna", "morphology"]), mz, "log1p intensity", "RNA + H&E")
    else:
        axes[1, 2].set_visible(False)
        axes[1, 3].set_visible(False)
    for ax in axes.ravel():
        panel_axes(ax, extent)
    fig.suptitle(f"{sample}: {key.upper()} outputs (grey: modality not measured at that spot)", fontsize=13)
    return fig


def iter_save_result_figures(sdata, data, out_dir, *, key: str = "mima", dpi: int = 90):
    """Write ``results_<sample>.png`` for every sample (generator; returns the paths).

    The gene and the m/z shown are the most variable measured ones among features detected in at least half
    of the measured spots of every sample (not picked by how well they impute).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from spatialmix.progress import Progress

    out_dir = Path(out_dir)
    gene = mz = None
    samples_col = data.obs["sample"].astype(str).to_numpy()

    def most_variable(m):
        ok = data.mask[m]
        x = data.dense(m)
        detected = np.ones(x.shape[1], bool)  # in at least half of the measured spots of *every* sample
        for smp in np.unique(samples_col[ok]):
            detected &= (x[ok & (samples_col == smp)] > 0).mean(axis=0) >= 0.5
        var = np.where(detected, x[ok].var(axis=0), -1.0)
        return str(data.var_names[m][int(np.argmax(var))])

    if "rna" in data.modalities:
        gene = most_variable("rna")
    if "msi" in data.modalities:
        mz = most_variable("msi")
    samples = samples_of(sdata)
    paths = []
    for i, sample in enumerate(samples):
        yield Progress("result figures", i, len(samples), sample)
        fig = plot_results(sdata, sample, key=key, gene=gene, mz=mz)
        path = out_dir / f"results_{sample}.png"
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        paths.append(path)
    yield Progress("result figures", len(samples), len(samples))
    return paths



def save_training_curve(model, path: str | Path, *, dpi: int = 100) -> Path:
    """The training and validation loss per epoch (log scale), the best validation epoch marked: written
    by every training run of the demo / ``spatialmix run`` beside ``training_curve.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = model.training_curve()
    schedule = (model.train_config or {}).get("schedule") or {}
    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=dpi)
    if len(curve):
        ax.plot(curve["epoch"], curve["loss"], lw=1.6, label="training loss")
        if "val_loss" in curve and curve["val_loss"].notna().any():
            ax.plot(curve["epoch"], curve["val_loss"], lw=1.2, label="validation loss")
        if np.all(curve["loss"].to_numpy() > 0):
            ax.set_yscale("log")
    best = schedule.get("best_epoch")
    if best:
        ax.axvline(best, color="k", ls=":", lw=1, label=f"best validation epoch ({best}, kept)")
    how = ("epochs auto: " if schedule.get("auto") else "") + (
        f"{schedule.get('epochs_run', len(curve))} of {schedule.get('epochs', len(curve))} planned epochs, "
        f"{schedule.get('steps_per_epoch', '?')} steps each" + (", early stop" if schedule.get("early_stopped") else ""))
    ax.set_title(f"{type(model).__name__} training ({how})", fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
