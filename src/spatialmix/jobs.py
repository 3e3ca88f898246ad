"""The main jobs, top of the package's layers: the headless demo and ``spatialmix run`` (prepare -> save ->
train -> outputs -> figures -> report, resumable), their report, and the cached demo project the napari sample
data opens.

Everything here is written once as a generator of :class:`~spatialmix.progress.Progress` events (run by the
napari widgets in a worker thread, by scripts and the CLI through :func:`spatialmix.progress.run`).
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from spatialmix.conventions import ANNOTATION_KEY
from spatialmix.pipeline import iter_prepare, table_shapes
from spatialmix.progress import Progress, run
from spatialmix.samples import bundled_sample_data, read_samples_csv


def iter_demo(out: str | Path, *, data: str | Path | None = None, overwrite: bool = True, integrate: bool = True,
              model: str = "mima", model_params: dict | None = None, train: dict | None = None,
              resume: bool = False, **prepare_kwargs):
    """The headless main job on the bundled sample (or ``data``): prepare, train MIMA, write its outputs,
    save, report, figures.

    Writes into ``out``: ``project.zarr`` (with every model output), ``model/`` (the trained model),
    ``metrics.json``, ``report.json``, ``report.md``, ``overlay_<sample>.png`` and ``results_<sample>.png``.
    ``train`` overrides the demo's training options (:data:`spatialmix.integrate.DEMO_TRAIN`); ``resume``
    continues a stopped demo in ``out`` (see :func:`iter_job`).
    """
    from spatialmix.integrate import DEMO_TRAIN

    data = Path(data) if data is not None else bundled_sample_data()
    return (yield from iter_job(read_samples_csv(data), out, data_dir=data, overwrite=overwrite, integrate=integrate,
                                model=model, model_params=model_params, train={**DEMO_TRAIN, **(train or {})},
                                prepare_kwargs=prepare_kwargs, resume=resume))


def iter_run(config, out: str | Path, *, overwrite: bool = False, resume: bool = False):
    """``spatialmix run CONFIG.toml --out DIR [--resume]``: the main job on user data described by a run
    configuration (:func:`spatialmix.config.load_config`); ``resume`` continues a stopped run (:func:`iter_job`)."""
    from spatialmix.config import load_config

    cfg = config if not isinstance(config, (str, Path)) else load_config(config)
    from spatialmix.models import MODELS
    from spatialmix.results import supported_outputs

    o = dict(cfg.outputs)
    outputs = {
        "outputs": [k for k in supported_outputs(MODELS[cfg.model]) if (k != "rgb" or o.get("rgb", True))
                    and (k not in ("corrected", "denoised") or o.get("corrected", True))],
        "translations": o.get("translations") or None,  # empty: every target from all other modalities
        "figures": bool(o.get("figures", True)) and o.get("rgb", True),
        "metrics": bool(o.get("metrics", True)),
    }
    prepare_kwargs = {**cfg.prepare, "annotation_key": cfg.annotation_key}
    return (yield from iter_job(cfg.samples, out, data_dir=Path(cfg.path).parent, overwrite=overwrite,
                                integrate=True, model=cfg.model, model_params=cfg.model_params, train=cfg.train,
                                prepare_kwargs=prepare_kwargs, results_options=outputs,
                                report_extra={"config": cfg.to_dict()}, resume=resume))


#: Folder of ``OUT`` where the main job keeps its training checkpoint (unless ``checkpoint_dir`` is configured).
JOB_CHECKPOINTS = "checkpoints"


def job_checkpoint_dir(out: str | Path, train: dict | None = None) -> Path:
    """Where :func:`iter_job` writes its training checkpoint: the configured ``checkpoint_dir`` or
    ``OUT/checkpoints``."""
    given = (train or {}).get("checkpoint_dir")
    return Path(given) if given else Path(out) / JOB_CHECKPOINTS


def job_state(out: str | Path, train: dict | None = None) -> dict:
    """What a stopped main job left in ``out``: ``project`` (path or None), ``checkpoint`` (path or None),
    ``epoch`` (the checkpoint's last completed epoch) and ``finished`` (training had ended)."""
    from spatialmix.train import CHECKPOINT_NAME

    out = Path(out)
    project = out / "project.zarr"
    ckpt = job_checkpoint_dir(out, train) / CHECKPOINT_NAME
    state = {"project": project if project.is_dir() else None, "checkpoint": None, "epoch": None, "finished": False}
    if ckpt.is_file():
        import torch

        try:
            saved = torch.load(ckpt, map_location="cpu", weights_only=False)
            state.update(checkpoint=ckpt, epoch=int(saved["epoch"]), finished=bool(saved.get("finished")))
        except Exception:  # noqa: BLE001 - an unreadable checkpoint is reported as none
            pass
    return state


def iter_job(specs, out: str | Path, *, data_dir: Path | None = None, overwrite: bool = True,
             integrate: bool = True, model: str = "mima", model_params: dict | None = None,
             train: dict | None = None, prepare_kwargs: dict | None = None, results_options: dict | None = None,
             report_extra: dict | None = None, resume: bool = False):
    """prepare -> save project -> train + write outputs + metrics -> save project -> figures -> report (the one
    main job).

    Nothing done is lost when the job is stopped (Ctrl-C, SIGTERM): the prepared project is saved in
    ``OUT/project.zarr`` before training starts, and training keeps its last completed epoch in
    :func:`job_checkpoint_dir` (``OUT/checkpoints/last.ckpt``). ``resume=True`` continues from there: it opens the
    saved project instead of preparing again and resumes training from the checkpoint (when there is one).
    ``report_extra`` is added to ``report.json`` (e.g. the run configuration)."""
    from spatialmix.errors import ProjectError
    from spatialmix.plotting import save_overlays
    from spatialmix.project import load_project, save_project
    from spatialmix.train import CHECKPOINT_NAME

    prepare_kwargs = dict(prepare_kwargs or {})
    results_options = dict(results_options or {})
    train = dict(train or {})
    t0 = time.perf_counter()
    out = Path(out)
    project = out / "project.zarr"
    ckpt_dir = job_checkpoint_dir(out, train)
    if integrate:
        train["checkpoint_dir"] = str(ckpt_dir)
    annotation_key = prepare_kwargs.get("annotation_key", ANNOTATION_KEY)
    if resume:
        if not project.is_dir():
            raise ProjectError(f"nothing to resume in {out}: it holds no project.zarr (the job was stopped before "
                               "its project was prepared). Run the same command without --resume")
        yield Progress("open project", 0, 1, str(project))
        sdata = load_project(project)
        yield Progress("open project", 1, 1, str(project))
        # from the last completed epoch; stopped before the first one ended: train from the start
        train["resume"] = True if (ckpt_dir / CHECKPOINT_NAME).is_file() else None
    else:
        if project.exists() and not overwrite:  # fail before minutes of work, not after
            raise ProjectError(f"{project} already exists. Pass --overwrite to replace it, or choose another --out")
        sdata = yield from iter_prepare(specs, **prepare_kwargs)
        out.mkdir(parents=True, exist_ok=True)
        if integrate:  # a stop during training keeps the prepared project
            yield Progress("save prepared project", 0, 1, str(project))
            save_project(sdata, project, overwrite=overwrite)
            yield Progress("save prepared project", 1, 1, str(project))
            if ckpt_dir == out / JOB_CHECKPOINTS and not train.get("resume"):
                # an earlier job's checkpoint must not be resumed into this one
                (ckpt_dir / CHECKPOINT_NAME).unlink(missing_ok=True)
    t_prepare = time.perf_counter() - t0
    integration = None
    if integrate:
        from spatialmix.integrate import iter_integrate

        integration = yield from iter_integrate(
            sdata, out, model=model, model_params=model_params, train=train, annotation_key=annotation_key,
            truth_dir=data_dir, figures=results_options.pop("figures", True),
            metrics=results_options.pop("metrics", True), results_options=results_options)
    t_integrate = time.perf_counter() - t0 - t_prepare
    yield Progress("save project", 0, 1)
    zarr_path = save_project(sdata, project, overwrite=overwrite or resume or integrate)
    yield Progress("figures", 0, 1)
    pngs = save_overlays(sdata, out, annotation_key=annotation_key)
    reg = sdata.attrs["spatialmix"].get("registration", {})
    truth_err = registration_error_vs_truth(sdata, data_dir) if data_dir is not None else {}
    files = [p for s in specs for p in (s.visium, s.imzml, s.he, s.annotations) if p is not None]
    size = sum(q.stat().st_size for p in files for q in ([p] if p.is_file() else p.rglob("*")) if q.is_file())
    if any(s.imzml is not None for s in specs):
        size += sum(s.imzml.with_suffix(".ibd").stat().st_size for s in specs
                    if s.imzml is not None and s.imzml.with_suffix(".ibd").exists())
    report = {
        "data": str(data_dir) if data_dir is not None else None,
        "samples": [s.sample for s in specs],
        "registration_rms_um": {
            s: {m: round(float(r.get("rms_um", float("nan"))), 2) for m, r in reg.get(s, {}).items()} for s in reg
        },
        "registration_error_vs_truth_um": truth_err,
        "table_shapes": table_shapes(sdata),
        "data_size_mb": round(size / 1e6, 2),
        "seconds": {"prepare": round(t_prepare, 2), "integrate": round(t_integrate, 2),
                    "total": round(time.perf_counter() - t0, 2)},
        "timings_s": sdata.attrs["spatialmix"]["prepare"]["timings_s"],
        "outputs": {"project": str(zarr_path), "overlays": [str(p) for p in pngs],
                    **({"results": integration["figures"], "model": integration["model_dir"],
                        "metrics": integration["metrics_json"]} if integration else {})},
        "integration": integration["metrics"] if integration else None,
        "versions": sdata.attrs["spatialmix"]["prepare"]["version"],
        **(report_extra or {}),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(format_report(report))
    yield Progress("figures", 1, 1)
    return report


def registration_error_vs_truth(sdata, data: Path) -> dict:
    """For simulated data (a ``truth/transforms.json`` per sample): RMS error in um of the stored transforms
    against the true ones, over the in-tissue spot centres. Empty for real data."""
    from spatialmix._elements import element_affine
    from spatialmix.registration import transform_error_um

    out: dict[str, dict[str, float]] = {}
    for sample in sdata.attrs.get("spatialmix", {}).get("samples", {}):
        folder = data / sample / "truth"
        if not (folder / "transforms.json").exists():
            continue
        truth = json.loads((folder / "transforms.json").read_text())
        spots = pd.read_csv(folder / "spots.csv")
        pts = spots.loc[spots["in_tissue"] == 1, ["x_um", "y_um"]].to_numpy()
        for modality, element in (("msi", f"{sample}_msi_tic"), ("he", f"{sample}_he")):
            if element in sdata.images and modality in truth:
                err = transform_error_um(element_affine(sdata.images[element], sample), np.asarray(truth[modality]), pts)
                out.setdefault(sample, {})[modality] = round(float(err), 2)
    return out


def format_report(report: dict) -> str:
    truth = report.get("registration_error_vs_truth_um") or {}
    lines = ["# napari-spatialmix demo report", "", f"Data: `{report['data']}` ({report.get('data_size_mb', '?')} MB)", "",
             "## Registration (automatic)", "",
             "Residual: RMS distance between the reference tissue boundary (Visium image; for MSI the registered H&E) "
             "and the registered moving tissue boundary "
             "(includes the boundary's pixelation)." + (" Truth: RMS error against the simulator's true transform "
                                                        "over the in-tissue spot centres." if truth else ""), "",
             "| sample | MSI residual | H&E residual |" + (" MSI error vs truth | H&E error vs truth |" if truth else ""),
             "|---|---|---|" + ("---|---|" if truth else "")]
    for s, r in report["registration_rms_um"].items():
        row = f"| {s} | {r.get('msi', float('nan')):.1f} um | {r.get('he', float('nan')):.1f} um |"
        if truth:
            t = truth.get(s, {})
            row += f" {t.get('msi', float('nan')):.1f} um | {t.get('he', float('nan')):.1f} um |"
        lines.append(row)
    lines += ["", "## Tables (spots x features)", "", "| table | shape |", "|---|---|"]
    for name, shape in report["table_shapes"].items():
        lines.append(f"| {name} | {shape[0]} x {shape[1]} |")
    integ = report.get("integration") or {}
    if integ.get("integration"):
        sched = integ.get("schedule") or {}
        how = ""
        if sched.get("best_epoch"):
            how = (f"; {'epochs auto: ' if sched.get('auto') else ''}{sched.get('epochs')} planned, "
                   f"{'early stop, ' if sched.get('early_stopped') else ''}best validation epoch {sched['best_epoch']} "
                   "kept; loss curve in training_curve.png")
        lines += ["", f"## Integration ({integ.get('epochs')} epochs{how}, {integ.get('train_seconds')} s of training)", "",
                  f"Scores in [0, 1], higher is better (scib-metrics), against the {integ.get('labels')}.", "",
                  "| representation | iLISI | batch ASW | label ASW | ARI | NMI | batch score | bio score |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, sc in integ["integration"].items():
            lines.append(f"| {name} | " + " | ".join(f"{sc[k]:.3f}" for k in (
                "ilisi", "batch_asw", "label_asw", "ari", "nmi", "batch_score", "bio_score")) + " |")
    if integ.get("translation_heldout"):
        lines += ["", "## Translation on held-out spots (model's validation split)", "",
                  "Median per-feature Pearson r and MSE over the 1,000 most variable features; baseline: the mean "
                  "profile of the spot's own annotation class over the training spots.", "",
                  "| direction | spots | r | baseline r | MSE | baseline MSE |", "|---|---|---|---|---|---|"]
        for name, t in integ["translation_heldout"].items():
            lines.append(f"| {name} | {t['n_heldout_spots']} | {t['pearson_median']:.3f} | "
                         f"{t['baseline_pearson_median']:.3f} | {t['mse']:.3f} | {t['baseline_mse']:.3f} |")
    secs = report["seconds"]
    lines += ["", f"Time: prepare {secs['prepare']:.1f} s"
              + (f", integrate {secs['integrate']:.1f} s" if "integrate" in secs else "")
              + f", total {secs['total']:.1f} s", ""]
    return "\n".join(lines)


def demo(out, **kwargs):
    progress = kwargs.pop("progress", False)
    return run(iter_demo(out, **kwargs), progress=progress)


def _data_fingerprint(data: Path) -> str:
    import hashlib

    from spatialmix import __version__

    h = hashlib.sha1(__version__.encode())
    for p in sorted(data.rglob("*")):
        if p.is_file() and "truth" not in p.parts:
            st = p.stat()
            h.update(f"{p.relative_to(data)}:{st.st_size}".encode())
    h.update((data / "samples.csv").read_bytes())
    return h.hexdigest()[:12]


def iter_demo_project(*, cache_dir: str | Path | None = None, data: str | Path | None = None):
    """The bundled demo as a prepared project, cached as a zarr so that opening it again takes a second.

    The cache lives in ``cache_dir`` (default ``$XDG_CACHE_HOME/spatialmix`` or ``~/.cache/spatialmix``) under a
    name derived from the data files and the package version; it is rebuilt when either changes.
    """
    import os

    from spatialmix.project import load_project, save_project

    data = Path(data) if data is not None else bundled_sample_data()
    if cache_dir is None:
        cache_dir = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spatialmix"
    path = Path(cache_dir) / f"demo-{_data_fingerprint(data)}.zarr"
    if path.exists():
        try:
            yield Progress("open cached demo", 0, 1, str(path))
            return load_project(path)
        except Exception:  # a damaged cache is rebuilt, never shown half
            import shutil

            shutil.rmtree(path, ignore_errors=True)
    sdata = yield from iter_prepare(read_samples_csv(data))
    try:
        save_project(sdata, path, overwrite=True)
    except OSError as err:  # read-only home: still show the demo
        warnings.warn(f"could not cache the demo project at {path}: {err}", stacklevel=2)
    return sdata
