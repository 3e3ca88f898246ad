"""Spread of every claim test's figure over training seeds, thread counts and torch's deterministic mode.

A claim test (tests/_claims.py) asserts a figure of a trained model (an F1, an iLISI gain, a FOSCTTM). The
figure a machine gets depends on its CPU kernels, its thread count and its package versions as much as on the
seed: training amplifies every rounding difference. This script runs every claim test (found by reading the
test files: a test function that calls ``_claims.check``) once per configuration, in a fresh pytest process:

    seeds 0..S-1 at 1 thread; seeds 0, 1 at 2 threads; seeds 0, 1 with deterministic algorithms

and writes, per claim, every value, min / mean / sd, the threshold the test uses and the margin
``(worst value - threshold) / sd``, to ``--out`` (JSON) and a table on stdout. ``docs/reproducibility.md``
says how the thresholds were set from it.

    python benchmarks/claim_spread.py --out benchmarks/results/claim_spread.json [--seeds 5] [--only PATTERN]

About 12 minutes per configuration on 2 cores (the demo, the calibration, scMODAL and MoDAmix claim tests).
Run it alone on the machine: the figures do not depend on load, but the wall time does.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def claim_tests(tests: Path = ROOT / "tests") -> list[str]:
    """Node ids of the test functions that call ``_claims.check`` (directly, in their own body)."""
    ids = []
    for path in sorted(tests.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                calls = [n for n in ast.walk(node) if isinstance(n, ast.Attribute) and n.attr == "check"
                         and isinstance(n.value, ast.Name) and n.value.id == "_claims"]
                if calls:
                    ids.append(f"tests/{path.name}::{node.name}")
    return ids


def configurations(n_seeds: int) -> list[dict]:
    out = [{"seed": s, "threads": 1, "deterministic": False} for s in range(n_seeds)]
    out += [{"seed": s, "threads": 2, "deterministic": False} for s in range(min(2, n_seeds))]
    out += [{"seed": s, "threads": 1, "deterministic": True} for s in range(min(2, n_seeds))]
    return out


def run_configuration(cfg: dict, node_ids: list[str], log: Path) -> dict:
    env = {**os.environ, "SPATIALMIX_CLAIM_SEED": str(cfg["seed"]), "SPATIALMIX_CLAIM_LOG": str(log),
           "OMP_NUM_THREADS": str(cfg["threads"]), "SPATIALMIX_DETERMINISTIC": "1" if cfg["deterministic"] else "0"}
    env.pop("SPATIALMIX_TEST_DEMO_OUT", None)  # every configuration trains its own demo model
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *node_ids],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    return {**cfg, "returncode": proc.returncode, "seconds": round(time.perf_counter() - t0, 1), "tail": tail}


def summarise(records: list[dict]) -> dict:
    by_claim: dict[str, list[dict]] = {}
    for r in records:
        by_claim.setdefault(r["claim"], []).append(r)
    out = {}
    for name, rs in sorted(by_claim.items()):
        v = np.array([r["value"] for r in rs])
        op, thr = rs[0]["op"], rs[0]["threshold"]
        worst = v.min() if op in (">", ">=") else v.max()
        sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        gap = (worst - thr) if op in (">", ">=") else (thr - worst)
        out[name] = {
            "op": op, "threshold": thr, "n": len(v), "min": float(v.min()), "mean": float(v.mean()),
            "max": float(v.max()), "sd": sd, "worst": float(worst), "worst_minus_threshold": float(gap),
            "margin_in_sd": float(gap / sd) if sd and np.isfinite(sd) and sd > 0 else None,
            "holds_everywhere": bool(all(r["ok"] for r in rs)),
            "values": [{"value": r["value"], "seed": r["seed"], "threads": r["threads"],
                        "deterministic": r["deterministic"]} for r in rs],
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "claim_spread.json")
    ap.add_argument("--seeds", type=int, default=5, help="training seeds at 1 thread (default 5)")
    ap.add_argument("--only", default=None,
                    help="run only claim tests whose node id contains one of these comma-separated texts")
    ap.add_argument("--merge", action="store_true",
                    help="keep the claims of --out that this run does not measure (the others are replaced)")
    ap.add_argument("--summarise", type=Path, default=None, help="only summarise an existing JSON-lines log")
    args = ap.parse_args(argv)

    only = [x.strip() for x in args.only.split(",")] if args.only else None
    node_ids = [n for n in claim_tests() if only is None or any(x in n for x in only)]
    previous = json.loads(args.out.read_text()) if args.merge and args.out.exists() else None
    log = args.summarise or args.out.with_suffix(".jsonl")
    runs = []
    if args.summarise is None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)
        print(f"{len(node_ids)} claim tests: " + ", ".join(n.split('::')[1] for n in node_ids), flush=True)
        for cfg in configurations(args.seeds):
            res = run_configuration(cfg, node_ids, log)
            runs.append(res)
            print(f"seed {cfg['seed']} threads {cfg['threads']} deterministic {cfg['deterministic']}: "
                  f"exit {res['returncode']} in {res['seconds']} s; {res['tail'][-1] if res['tail'] else ''}",
                  flush=True)
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    claims = summarise(records)
    if previous is not None:  # claims of tests not re-run this time keep their earlier measurement
        fresh = {name.split("/")[0] for name in claims}
        kept = {k: v for k, v in previous["claims"].items() if k.split("/")[0] not in fresh}
        claims = dict(sorted({**kept, **claims}.items()))
        runs = previous.get("runs", []) + [{**r, "partial": node_ids} for r in runs]
        node_ids = sorted(set(previous.get("claim_tests", [])) | set(node_ids))
    import platform

    import torch

    result = {"runs": runs, "claim_tests": node_ids, "claims": claims,
              "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                          "torch": torch.__version__, "cores": os.cpu_count()}}
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\n{'claim':<72} {'thr':>8} {'min':>8} {'mean':>8} {'max':>8} {'sd':>7} {'margin/sd':>9}")
    for name, c in claims.items():
        m = "" if c["margin_in_sd"] is None else f"{c['margin_in_sd']:.1f}"
        print(f"{name:<72} {c['op']}{c['threshold']:>7.3f} {c['min']:>8.3f} {c['mean']:>8.3f} {c['max']:>8.3f} "
              f"{c['sd']:>7.3f} {m:>9}{'' if c['holds_everywhere'] else '  FAILS somewhere'}")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
