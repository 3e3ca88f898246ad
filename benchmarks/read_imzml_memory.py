"""Memory of ``spatialmix.io.read_imzml`` on a 100,000-pixel processed imzML.

Writes a synthetic processed imzML (316 x 316 pixels, ~150 centroided peaks per pixel, pyimzML's
``ImzMLWriter``) into a temporary folder, then reads it in fresh subprocesses and measures

- the peak resident-memory increase of the read (Linux ``VmHWM`` after resetting it through
  ``/proc/self/clear_refs``, minus ``VmRSS`` before the read), in a run without tracemalloc;
- the tracemalloc peak of the read (Python objects and numpy buffers), in a second run;
- the peak / retained RSS of pyimzML's own metadata parse alone, and the size of its per-spectrum Python lists.

Before measuring, each subprocess reads a 3-pixel file once, so lazily imported modules and one-time
initialisations are not counted. Files whose imzML is larger than 32 MiB have their metadata parsed by
pyimzML in a short-lived child process (see ``spatialmix.io.imzml._parse_metadata``), so its per-spectrum
Python lists never enter the reading process.

The figures are compared with the size of the final binned table plus one chunk of raw spectra (the budget).
Prints the figures and writes JSON (``--out``, default ``benchmarks/results/read_imzml_memory.json``).

Run: ``PYTHONPATH=src python benchmarks/read_imzml_memory.py [--side 316] [--peaks 150]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys, time, tracemalloc, gc
mode, path, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
import numpy as np, anndata, spatialdata, scipy.sparse, pyimzml.ImzMLParser  # imports are not part of the read
from spatialmix.io import read_imzml

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return None

# warm-up: one read of a 3-pixel file, so that modules the reader imports lazily (spatialdata's models, xarray,
# dask, ...) and other one-time initialisations (~30 MiB) are not counted as memory needed to read the file
import tempfile, pathlib
from pyimzml.ImzMLWriter import ImzMLWriter
with tempfile.TemporaryDirectory() as warm:
    wp = pathlib.Path(warm) / "warm.imzML"
    with ImzMLWriter(str(wp), mode="processed") as w:
        for i in range(3):
            w.addSpectrum(np.array([500.0, 600.0]), np.array([1.0, 2.0]), (i + 1, 1))
    read_imzml(wp, sample="W", pixel_size_um=50.0)
gc.collect()
out = {}
if mode == "rss":
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM (peak RSS) to the current RSS
        out["hwm_reset"] = True
    except OSError:
        out["hwm_reset"] = False
    rss0 = status("VmRSS")
    from spatialmix.io import iter_read_imzml
    from spatialmix.progress import run
    t = time.perf_counter()
    marks = {}
    def mark(ev):
        if ev.total and "parsed" not in marks:
            marks["parsed"] = time.perf_counter() - t
    sd = run(iter_read_imzml(path, sample="B", pixel_size_um=50.0, chunk_size=chunk), progress=mark)
    out["seconds"] = time.perf_counter() - t
    out["parse_seconds"] = marks.get("parsed")
    out["rss_before"] = rss0
    out["rss_after"] = status("VmRSS")
    out["hwm"] = status("VmHWM")
elif mode == "trace":
    tracemalloc.start()
    sd = read_imzml(path, sample="B", pixel_size_um=50.0, chunk_size=chunk)
    cur, peak = tracemalloc.get_traced_memory()
    out["traced_peak"] = peak
    out["traced_retained"] = cur
else:  # pyimzML metadata parse alone (RSS: tracemalloc slows the XML parse ~5x)
    from pyimzml.ImzMLParser import ImzMLParser
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    rss0 = status("VmRSS")
    t = time.perf_counter()
    p = ImzMLParser(path, parse_lib="lxml", ibd_file=None)
    out["seconds"] = time.perf_counter() - t
    out["peak_rss_increase"] = status("VmHWM") - rss0
    out["retained_rss_increase"] = status("VmRSS") - rss0
    lists = (p.mzOffsets, p.mzLengths, p.intensityOffsets, p.intensityLengths, p.coordinates)
    out["list_bytes"] = int(sum(sys.getsizeof(l) + sum(sys.getsizeof(v) for v in l) for l in lists[:4])
                            + sys.getsizeof(p.coordinates)
                            + sum(sys.getsizeof(c) + sum(sys.getsizeof(v) for v in c) for c in p.coordinates))
    out["n_spectra"] = len(p.coordinates)
    print(json.dumps(out)); sys.exit(0)
t = sd.tables["B_msi"]
X = t.X
if scipy.sparse.issparse(X):
    x_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    out["nnz"] = int(X.nnz)
else:
    x_bytes = X.nbytes
    out["nnz"] = int(np.count_nonzero(X))
out["x_bytes"] = int(x_bytes)
out["table_bytes"] = int(x_bytes + t.obsm["spatial"].nbytes + t.obs.memory_usage(deep=True).sum()
                         + t.var.memory_usage(deep=True).sum())
out["tic_image_bytes"] = int(sd.images["B_msi_tic"].data.nbytes)
out["shape"] = list(t.shape)
out["sparse"] = bool(scipy.sparse.issparse(X))
print(json.dumps(out))
"""


def write_dataset(folder: Path, side: int, peaks: int, seed: int = 0) -> tuple[Path, dict]:
    from pyimzml.ImzMLWriter import ImzMLWriter

    rng = np.random.default_rng(seed)
    library = np.sort(rng.uniform(100.0, 1000.0, 4000))
    path = folder / "bench.imzML"
    t = time.perf_counter()
    n_values = 0
    with ImzMLWriter(str(path), mode="processed", mz_dtype=np.float64, intensity_dtype=np.float32) as w:
        for y in range(side):
            counts = rng.poisson(peaks, side)
            for x in range(side):
                k = int(counts[x])
                sel = np.sort(rng.choice(len(library), k, replace=False))
                mzs = library[sel] * (1.0 + rng.normal(0.0, 2e-6, k))
                ints = rng.gamma(2.0, 500.0, k).astype(np.float32)
                w.addSpectrum(mzs, ints, (x + 1, y + 1))
                n_values += k
    info = {"write_seconds": time.perf_counter() - t, "n_values": n_values,
            "imzml_bytes": path.stat().st_size, "ibd_bytes": path.with_suffix(".ibd").stat().st_size}
    return path, info


def child(mode: str, path: Path, chunk: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE.parent / "src"))
    res = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(chunk)], env=env, capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"child {mode} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=316, help="pixels per side (316 -> 99,856 pixels)")
    ap.add_argument("--peaks", type=int, default=150, help="mean centroided peaks per pixel")
    ap.add_argument("--chunk-size", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "read_imzml_memory.json")
    args = ap.parse_args(argv)

    mb = 1024**2
    with tempfile.TemporaryDirectory(prefix="spatialmix-bench-") as tmp:
        path, written = write_dataset(Path(tmp), args.side, args.peaks)
        n_pixels = args.side**2
        print(f"wrote {n_pixels} pixels, {written['n_values']} peaks: .ibd {written['ibd_bytes'] / mb:.1f} MiB, "
              f".imzML {written['imzml_bytes'] / mb:.1f} MiB in {written['write_seconds']:.1f} s")
        rss = child("rss", path, args.chunk_size)
        trace = child("trace", path, args.chunk_size)
        parser = child("parser", path, args.chunk_size)

    values_per_pixel = written["n_values"] / n_pixels
    # one chunk of raw spectra as stored (float64 m/z + float32 intensity per value)
    chunk_raw = int(args.chunk_size * values_per_pixel * (8 + 4))
    budget = rss["table_bytes"] + rss["tic_image_bytes"] + chunk_raw
    peak_rss = rss["hwm"] - rss["rss_before"]
    result = {
        "benchmark": "read_imzml_memory",
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "n_pixels": n_pixels,
        "peaks_per_pixel": values_per_pixel,
        "chunk_size": args.chunk_size,
        "written": written,
        "read_seconds": rss["seconds"],
        "table_shape": rss["shape"],
        "table_sparse": rss["sparse"],
        "nnz": rss["nnz"],
        "final_x_bytes": rss["x_bytes"],
        "final_table_bytes": rss["table_bytes"],
        "tic_image_bytes": rss["tic_image_bytes"],
        "one_chunk_raw_bytes": chunk_raw,
        "budget_bytes": budget,
        "peak_rss_increase_bytes": peak_rss,
        "rss_retained_increase_bytes": rss["rss_after"] - rss["rss_before"],
        "hwm_reset_worked": rss["hwm_reset"],
        "tracemalloc_peak_bytes": trace["traced_peak"],
        "tracemalloc_retained_bytes": trace["traced_retained"],
        "parse_seconds_within_read": rss["parse_seconds"],
        "pyimzml_parse_seconds": parser["seconds"],
        "pyimzml_parse_peak_rss_increase_bytes": parser["peak_rss_increase"],
        "pyimzml_parser_retained_rss_bytes": parser["retained_rss_increase"],
        "pyimzml_per_spectrum_list_bytes": parser["list_bytes"],
        "peak_rss_over_budget": peak_rss / budget,
        "tracemalloc_peak_over_budget": trace["traced_peak"] / budget,
        "raw_spectra_bytes": written["n_values"] * 12,
    }
    print(f"read {n_pixels} pixels in {rss['seconds']:.1f} s (metadata parse {rss['parse_seconds']:.1f} s) "
          f"-> table {rss['shape']} "
          f"({'CSR' if rss['sparse'] else 'dense'}, nnz {rss['nnz']})")
    print(f"final table {rss['table_bytes'] / mb:.1f} MiB (X {rss['x_bytes'] / mb:.1f} MiB) + TIC image "
          f"{rss['tic_image_bytes'] / mb:.1f} MiB + one chunk of raw spectra {chunk_raw / mb:.1f} MiB "
          f"= budget {budget / mb:.1f} MiB (all raw spectra: {written['n_values'] * 12 / mb:.1f} MiB)")
    print(f"peak RSS increase {peak_rss / mb:.1f} MiB ({peak_rss / budget:.2f} x budget); "
          f"tracemalloc peak {trace['traced_peak'] / mb:.1f} MiB ({trace['traced_peak'] / budget:.2f} x budget)")
    print(f"pyimzML's metadata parse alone: peak RSS +{parser['peak_rss_increase'] / mb:.1f} MiB, retained "
          f"+{parser['retained_rss_increase'] / mb:.1f} MiB, of which its per-spectrum Python lists "
          f"{parser['list_bytes'] / mb:.1f} MiB (read_imzml copies them to numpy, "
          f"{5 * 8 * n_pixels / mb:.1f} MiB, and drops them), {parser['seconds']:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
