"""Build a development case (spatialmix.datasets) and run `spatialmix benchmark` on it with every peer.

    python benchmarks/real_cases.py --case starmap --out bench/starmap [--models all] [--jobs 2]
    python benchmarks/real_cases.py --case visium_he --out bench/visium_he
    python benchmarks/real_cases.py --case sim7 --out bench/sim7

Cases (``spatialmix.datasets.CASES``): ``starmap`` (STARmap mPFC, two gene halves, 3 sections, 16 cell types),
``visium_he`` (real Visium mouse brain: RNA + H&E features, one section, unlabelled: translation only), ``sim0``
(the bundled sample), ``sim7``, ``sim11`` (the simulator at other seeds). Each is fetched with pip / apt-get into
the cache (``$SPATIALMIX_CASES`` or ``~/.cache/spatialmix/cases``), built deterministically, and benchmarked;
the benchmark writes metrics.json, report.md and figures into ``--out`` and this script adds ``case.json``
(the case, the command, wall time). ``docs/benchmarks.md`` summarises the results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    from spatialmix import datasets
    from spatialmix.benchmark import format_benchmark, iter_benchmark
    from spatialmix.progress import run

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", required=True, choices=sorted(datasets.CASES))
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--models", default="all", help="as `spatialmix benchmark --models` (default: all)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel bags of the annotation classifier (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    case = datasets.CASES[args.case]
    t0 = time.perf_counter()
    path = case.build()
    built = time.perf_counter() - t0
    options = case.options()
    label_key = options.pop("label_key", None)
    kwargs = dict(models=args.models.split(","), classifier={"n_jobs": args.jobs}, seed=args.seed)
    if options:  # non-spatial (.h5mu)
        kwargs.update(options, label_key=label_key)
    metrics = run(iter_benchmark(path, args.out, **kwargs), progress=not args.quiet)
    wall = time.perf_counter() - t0
    (args.out / "case.json").write_text(json.dumps({
        "case": case.name, "description": case.description, "data": str(path), "build_seconds": round(built, 1),
        "benchmark_seconds": metrics["seconds_total"], "wall_seconds": round(wall, 1),
        "command": " ".join(["python", "benchmarks/real_cases.py", *(argv or sys.argv[1:])])}, indent=2))
    print(format_benchmark(metrics))
    print(f"case {case.name}: built in {built:.0f} s, benchmark {metrics['seconds_total']:.0f} s, wall {wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
