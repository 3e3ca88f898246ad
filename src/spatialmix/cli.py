"""Command line: ``spatialmix simulate | prepare | demo | run | benchmark``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _cmd_simulate(args) -> int:
    from spatialmix.progress import run
    from spatialmix.simulate import iter_simulate

    t = time.perf_counter()
    out = run(iter_simulate(args.out, n_samples=args.samples, seed=args.seed, size=args.size), progress=not args.quiet)
    size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    print(f"wrote {args.samples} samples ({args.size}, seed {args.seed}) to {out}: "
          f"{size / 1e6:.1f} MB in {time.perf_counter() - t:.1f} s")
    return 0


def _cmd_prepare(args) -> int:
    from spatialmix.errors import ProjectError
    from spatialmix.pipeline import iter_prepare, table_shapes
    from spatialmix.progress import run
    from spatialmix.project import save_project

    target = args.out if args.out.suffix == ".zarr" else args.out.with_name(args.out.name + ".zarr")
    if target.exists() and not args.overwrite:  # fail before minutes of work, not after
        raise ProjectError(f"{target} already exists. Pass --overwrite to replace it, or choose another --out")

    sdata = run(iter_prepare(args.data, bin_ppm=args.bin_ppm, annotation_key=args.annotation_key,
                             register=not args.no_register), progress=not args.quiet)
    path = save_project(sdata, args.out, overwrite=args.overwrite)
    print(f"saved {path}")
    print(json.dumps(table_shapes(sdata)))
    return 0


def _train_overrides(args) -> dict:
    out = {}
    for name in ("epochs", "max_steps", "lr", "device", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    return out


def _cmd_demo(args) -> int:
    from spatialmix.jobs import format_report, iter_demo
    from spatialmix.progress import run

    report = run(iter_demo(args.out, data=args.data, integrate=not args.no_train, train=_train_overrides(args),
                           resume=args.resume), progress=not args.quiet)
    print(format_report(report))
    print(f"outputs in {args.out}")
    return 0


def _cmd_run(args) -> int:
    from spatialmix.config import load_config
    from spatialmix.errors import ParameterError
    from spatialmix.jobs import format_report, iter_run
    from spatialmix.progress import run

    if (args.config is None) == (args.data is None):
        raise ParameterError("spatialmix run needs either a run configuration (TOML, a spatial dataset) or --data "
                             "FILE.h5mu|FILE.h5ad,... (paired multi-omics), not both and not neither")
    if args.data is not None:
        from spatialmix.multiomics import iter_run_multiomics

        if args.resume:
            raise ParameterError("--resume continues a run configuration's job (spatial data); a --data run "
                                 "trains in one go: run it again without --resume")

        report = run(iter_run_multiomics(args.data, args.out, model=args.model, train=_train_overrides(args),
                                         overwrite=args.overwrite, label_key=args.label_key,
                                         **_multiomics_options(args)), progress=not args.quiet)
        print(f"{report['model']}\ntrained {report['epochs']} epochs in {report['train_seconds']:.0f} s")
        print(f"outputs in {args.out}: {report['results']}, {report['model_dir']}, training_curve.csv")
        return 0
    cfg = load_config(args.config)  # validated before any work starts
    cfg.train.update(_train_overrides(args))
    args.train_options = cfg.train  # where a stop reports the checkpoint (a configured checkpoint_dir)
    report = run(iter_run(cfg, args.out, overwrite=args.overwrite, resume=args.resume), progress=not args.quiet)
    print(format_report(report))
    print(f"outputs in {args.out}")
    return 0


def _key_values(text: str | None, option: str) -> dict[str, str]:
    """``"rna=counts,protein=protein"`` -> ``{"rna": "counts", "protein": "protein"}``; a single word applies to
    every modality (returned as ``{"*": word}``)."""
    from spatialmix.errors import ParameterError

    if not text:
        return {}
    out = {}
    for item in [x.strip() for x in text.split(",") if x.strip()]:
        if "=" not in item:
            if len(text.split(",")) == 1:
                return {"*": item}
            raise ParameterError(f"{option} takes modality=value pairs separated by commas "
                                 f"(e.g. rna=counts,protein=protein), got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _multiomics_options(args) -> dict:
    """The non-spatial input options of ``benchmark`` / ``run`` (``.h5mu`` / ``.h5ad`` data)."""
    pre = _key_values(args.preprocessing, "--preprocessing")
    z = _key_values(args.zscore, "--zscore")
    truthy = {"1", "true", "yes", "on"}
    zscore = (z["*"].lower() in truthy) if "*" in z else {k: v.lower() in truthy for k, v in z.items()}
    return {"batch_key": args.batch_key, "sample_key": args.sample_key,
            "preprocessing": pre.get("*") if "*" in pre else (pre or None), "zscore": zscore or False,
            "modalities": [m.strip() for m in args.modalities.split(",")] if args.modalities else None}


def _cmd_benchmark(args) -> int:
    from spatialmix.benchmark import format_benchmark, iter_benchmark
    from spatialmix.progress import run

    classifier = {k: v for k, v in (("n_bags", args.n_bags), ("n_trees", args.n_trees), ("n_jobs", args.n_jobs))
                  if v is not None}
    exclude = None if args.exclude is None else [c.strip() for c in args.exclude.split(",") if c.strip()]
    metrics = run(iter_benchmark(args.data, args.out, models=args.models.split(","),
                                 annotation_key=args.annotation_key, label_key=args.label_key,
                                 **_multiomics_options(args), exclude=exclude, train=_train_overrides(args),
                                 source_samples=None if not args.source_samples else
                                 [x.strip() for x in args.source_samples.split(",") if x.strip()],
                                 translation=not args.no_translation, cv_folds=args.cv_folds,
                                 classifier=classifier, figures=not args.no_figures,
                                 map_representation=args.map_representation,
                                 seed=args.seed if args.seed is not None else 0, overwrite=args.overwrite),
                  progress=not args.quiet)
    print(format_benchmark(metrics))
    print(f"outputs in {args.out}: {', '.join(metrics['files'])}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from spatialmix.pipeline import PrepareParams

    p = argparse.ArgumentParser(prog="spatialmix", description=__doc__)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="write a realistic multi-sample dataset in the real file formats")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--samples", type=int, default=4)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", choices=["small", "paper"], default="small")
    s.set_defaults(func=_cmd_simulate)

    s = sub.add_parser("prepare", help="read, register and build per-spot tables of a dataset into a zarr project")
    s.add_argument("data", type=Path, help="dataset folder with samples.csv (or the csv itself)")
    s.add_argument("--out", required=True, type=Path, help="project .zarr to write")
    s.add_argument("--bin-ppm", type=_declared_option(PrepareParams, "bin_ppm"), default=20.0,
                   help=f"{PrepareParams.doc('bin_ppm')} ({PrepareParams.describe('bin_ppm', 'cli')})")
    s.add_argument("--annotation-key", default="pathologist")
    s.add_argument("--no-register", action="store_true", help="keep the nominal pixel sizes, no automatic registration")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=_cmd_prepare)

    s = sub.add_parser("demo", help="the headless main job on the bundled sample data")
    s.add_argument("--out", type=Path, default=Path("demo_out"))
    s.add_argument("--data", type=Path, default=None, help="another dataset folder (default: the bundled sample)")
    s.add_argument("--no-train", action="store_true", help="only prepare (read, register, tables, overlays)")
    _resume_arg(s)
    _train_args(s)
    s.set_defaults(func=_cmd_demo)

    s = sub.add_parser("run", help="the main job on your data: a spatial dataset described by a TOML run "
                                   "configuration, or paired multi-omics (--data FILE.h5mu --batch-key KEY)")
    s.add_argument("config", type=Path, nargs="?", default=None,
                   help="run configuration (TOML); see docs/config.md. Not with --data")
    s.add_argument("--data", default=None,
                   help="paired multi-omics instead of a configuration: FILE.h5mu, or FILE.h5ad,... one per modality "
                        "(outputs go into OUT/results.h5mu; see spatialmix.multiomics)")
    s.add_argument("--model", default="mima", help="with --data: the model to train (default mima)")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--overwrite", action="store_true", help="replace an existing project in --out")
    _resume_arg(s)
    _multiomics_args(s)
    _train_args(s)
    s.set_defaults(func=_cmd_run)

    s = sub.add_parser("benchmark", help="every model and baseline on one dataset: annotation prediction, scIB, "
                       "translation fidelity; metrics.json/csv, report.md, figures (see docs/benchmarks.md)")
    s.add_argument("--data", required=True,
                   help="spatial: a dataset folder with samples.csv (e.g. from `spatialmix simulate`) or a project "
                        ".zarr; paired multi-omics: an .h5mu file, or .h5ad files one per modality "
                        "(rna.h5ad,protein.h5ad or rna=a.h5ad,protein=b.h5ad)")
    s.add_argument("--models", default="mima,pca,harmony",
                   help="comma-separated: mima, modamix, calibration, scmodal (trained), pca, harmony (baselines), "
                        "scanorama, scvi, totalvi, multivi, mofa, mima_unimodal (the MIMA paper's peers); "
                        "'peers' = every peer the data supports, 'all' = those and mima, pca, harmony")
    s.add_argument("--source-samples", default=None,
                   help="comma-separated labelled source samples of modamix / calibration and the RNA samples of "
                        "scmodal (default: every other sample in sorted order)")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--annotation-key", default="pathologist", help="label column of a spatial project")
    _multiomics_args(s)
    s.add_argument("--exclude", default=None,
                   help="comma-separated classes left out of training and scoring (default: the paper's: "
                        "Nerve, Necrosis, ISUP2, ISUP4, Other, Unlabelled); '' keeps every class")
    s.add_argument("--cv-folds", type=_whole(2), default=4, help="folds of the within-sample and translation CV")
    s.add_argument("--no-translation", action="store_true", help="skip the cross-validated translation fidelity")
    s.add_argument("--no-figures", action="store_true")
    s.add_argument("--map-representation", default=None, help="whose predictions the annotation maps show")
    s.add_argument("--n-bags", type=int, default=None, help="bags per one-vs-rest ensemble (default 10)")
    s.add_argument("--n-trees", type=int, default=None, help="trees per random forest (default 50)")
    s.add_argument("--n-jobs", type=int, default=None, help="parallel bags (joblib; -1 = all cores)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing metrics.json in --out")
    _train_args(s)
    s.set_defaults(func=_cmd_benchmark)
    return p


def _multiomics_args(s) -> None:
    g = s.add_argument_group("paired multi-omics input (.h5mu / .h5ad; see spatialmix.data.read_multimodal)")
    g.add_argument("--batch-key", default=None, help="obs column of each cell's batch (required for .h5mu/.h5ad)")
    g.add_argument("--label-key", default=None, help="obs column of the labels (none: unlabelled)")
    g.add_argument("--sample-key", default=None,
                   help="obs column grouping the cells left out together by the LOOCV classifier (default: batch)")
    g.add_argument("--preprocessing", default=None,
                   help="how each modality was measured, declared: modality=kind pairs, kind one of counts "
                        "(normalize_total + log1p, raw kept), protein (CLR, raw kept), normalized (as given); "
                        "e.g. rna=counts,protein=protein")
    g.add_argument("--zscore", default=None, help="z-score features after preprocessing: true, or modality=true pairs")
    g.add_argument("--modalities", default=None, help="comma-separated modalities to use (default: all)")


def _declared_option(decl, name: str):
    """An argparse type for the parameter ``name`` of the declaration ``decl`` (``TrainConfig``,
    ``PrepareParams``, ...; ``spatialmix.params``), parsed and checked by it with the same rule as the Python
    API and the run configuration, before any data is read."""
    import argparse

    from spatialmix.params import field_info

    info = field_info(decl, name)

    def check(value: str):
        v: object = value.strip()
        if info.kind in ("int", "float"):  # epochs is an int that may also be "auto": left a string when not a number
            try:
                v = int(v) if info.kind == "int" else float(v)
            except ValueError:
                pass
        out, problems = decl.problems({name: v})
        if problems:
            raise argparse.ArgumentTypeError(f"must be {decl.describe(name, 'cli')}, got {value!r}")
        return out[name]
    check.__name__ = name
    return check


def _train_option(name: str):
    """:func:`_declared_option` of a training option (``spatialmix.train.TrainConfig``)."""
    from spatialmix.train import TrainConfig

    return _declared_option(TrainConfig, name)


def _whole(low: int):
    """A whole number >= ``low`` (--max-steps, --seed, --cv-folds), checked before any data is read."""
    import argparse

    def check(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got {value!r}") from None
        if n < low:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got {value!r}")
        return n
    check.__name__ = f"whole number >= {low}"
    return check


def _resume_arg(s) -> None:
    s.add_argument("--resume", action="store_true",
                   help="continue a job that was stopped (Ctrl-C, SIGTERM): open the project saved in --out and "
                        "resume training from its last completed epoch (--out/checkpoints/last.ckpt); give the "
                        "same options as the stopped command")


def _train_args(s) -> None:
    g = s.add_argument_group("training (override the configuration / demo defaults)")
    from spatialmix.train import TrainConfig

    for flag, name in (("--epochs", "epochs"), ("--max-steps", "max_steps"), ("--lr", "lr"),
                       ("--device", "device"), ("--seed", "seed")):  # type, check and help from the declaration
        g.add_argument(flag, dest=name, type=_train_option(name), default=None,
                       help=f"{TrainConfig.doc(name)} ({TrainConfig.describe(name, 'cli')})".replace("`", "").replace("%", "%%"))


def _raise_interrupted(signum, frame):
    from spatialmix.errors import Interrupted

    raise Interrupted(signum)


def _stopped(args, argv: list[str], err: KeyboardInterrupt) -> int:
    """One line for a job stopped by Ctrl-C or SIGTERM: what is saved where and how to resume; the exit status
    (128 + the signal's number: 130 for SIGINT, 143 for SIGTERM)."""
    import shlex

    from spatialmix.errors import Interrupted

    err = err if isinstance(err, Interrupted) else Interrupted(2)
    how = "Ctrl-C (SIGINT)" if err.signal_name == "SIGINT" else err.signal_name
    command = "spatialmix " + shlex.join(argv)
    if args.command == "demo" or (args.command == "run" and args.data is None):  # the main job (iter_job)
        from spatialmix.jobs import job_state

        state = job_state(args.out, getattr(args, "train_options", None))
        resume = "spatialmix " + shlex.join([a for a in argv if a not in ("--overwrite", "--resume")] + ["--resume"])
        if state["project"] is None:
            line = f"stopped by {how} before the project was prepared; nothing was saved. Run again: {command}"
        else:
            saved = f"the prepared project is saved in {state['project']}"
            if state["checkpoint"] is not None:
                done = "training had finished" if state["finished"] else f"epoch {state['epoch']}"
                saved += f", the last completed training ({done}) in {state['checkpoint']}"
            else:
                saved += " (no training epoch had completed)"
            line = f"stopped by {how}; {saved}. Resume with: {resume}"
    else:
        line = f"stopped by {how}; the files already complete in the output are kept. Run again: {command}"
    print(f"spatialmix: {line}", file=sys.stderr)
    return err.exit_code


def main(argv: list[str] | None = None) -> int:
    import signal
    import warnings

    from spatialmix.errors import SpatialMixError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from tqdm.auto import tqdm

    # one readable line per warning (e.g. spots without MSI coverage), above any progress bar, no source listing
    def show(message, category, filename, lineno, file=None, line=None):
        tqdm.write(f"spatialmix: {category.__name__}: {message}", file=sys.stderr)

    warnings.showwarning = show
    # a scheduler's SIGTERM stops the job the way Ctrl-C does: the work done so far is saved (iter_job)
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    except ValueError:  # not the main thread (main() called from a worker): no signal handling there
        previous = None
    try:
        return args.func(args)
    except SpatialMixError as err:
        print(f"spatialmix: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM as spatialmix.errors.Interrupted
        return _stopped(args, argv, err)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
