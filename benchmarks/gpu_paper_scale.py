"""MIMA at the paper's scale on one GPU: compile on / off x fp32 / TF32 / bf16 (issue 16, item 5).

    PYTHONPATH=src python benchmarks/gpu_paper_scale.py [--epochs 50] [--paper-spots N] [--configs ...] [--quick]

Each configuration runs ``benchmarks/train_speed.py --scales paper --device cuda`` in a fresh process (the paper
shapes: 42,400 spots, 18,950 genes as CSR, 12,510 m/z, 67 morphology features; batch 128; 80 / 20 split) and
reports seconds per epoch (median after the first), the whole training's wall time (compilation included),
peak GPU memory (``torch.cuda.max_memory_allocated``) and what the engine used
(``train_config["accelerations"]``: compiled or why not, static shapes, TF32, fused Adam). The goal of issue
16 is at most 20 s for 50 epochs on one H100 / H200.

Configurations (``--configs``, default all eight): ``eager-fp32``, ``eager-tf32``, ``eager-bf16``,
``compiled-fp32``, ``compiled-tf32``, ``compiled-bf16`` (``bf16`` = ``precision="bf16-mixed"`` with TF32 on), all
with batched decoders (the engine's default on CUDA), and ``eager-tf32-unbatched``, ``compiled-tf32-unbatched``
(one decoder call per decoding, ``batched_decoders=False``).
Prints a table and writes JSON (``--out``, default ``benchmarks/results/gpu_paper_scale.json``).

Needs a CUDA GPU; ``--quick`` instead runs tiny shapes for one epoch on whatever device there is (a smoke test
of the driver, not a figure). No figure from this script exists until it has run on a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import train_speed  # noqa: E402  (the benchmark next to this one)

CONFIGS = {
    "eager-fp32": {"compile": "off", "tf32": "off", "precision": "32-true"},
    "eager-tf32": {"compile": "off", "tf32": "on", "precision": "32-true"},
    "eager-bf16": {"compile": "off", "tf32": "on", "precision": "bf16-mixed"},
    "compiled-fp32": {"compile": "on", "tf32": "off", "precision": "32-true"},
    "compiled-tf32": {"compile": "on", "tf32": "on", "precision": "32-true"},
    "compiled-bf16": {"compile": "on", "tf32": "on", "precision": "bf16-mixed"},
    # every configuration above decodes batched (the engine's default on CUDA); these two measure what that gives
    "eager-tf32-unbatched": {"compile": "off", "tf32": "on", "precision": "32-true", "batched_decoders": "off"},
    "compiled-tf32-unbatched": {"compile": "on", "tf32": "on", "precision": "32-true", "batched_decoders": "off"},
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--paper-spots", type=int, default=None)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--quick", action="store_true", help="tiny shapes, 1 epoch, any device (smoke test)")
    ap.add_argument("--out", type=Path, default=None)
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    if not args.quick and not torch.cuda.is_available():
        from spatialmix.errors import ParameterError

        raise ParameterError("benchmarks/gpu_paper_scale.py needs a CUDA GPU (torch sees none here); run it on a "
                             "GPU machine, or with --quick for a smoke test of the driver")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = args.out or (Path("/tmp/spatialmix_gpu_paper_scale_quick.json") if args.quick
                       else HERE / "results" / "gpu_paper_scale.json")
    rows = {}
    for name in args.configs:
        c = CONFIGS[name]
        tmp = out.with_name(out.stem + f"_{name}.json")
        argv_child = ["--scales", "paper", "--device", device, "--epochs-paper", str(args.epochs),
                      "--precision", c["precision"], "--compile", c["compile"], "--tf32", c["tf32"],
                      "--batched-decoders", c.get("batched_decoders", "auto"),
                      "--out", str(tmp), "--note", f"gpu_paper_scale {name}"]
        if args.paper_spots:
            argv_child += ["--paper-spots", str(args.paper_spots)]
        if args.quick:
            argv_child.append("--quick")
        print(f"== {name} ==", flush=True)
        res = train_speed.main(argv_child)["scales"]["paper"]
        if "error" in res:
            rows[name] = {"error": res["error"], "output": res.get("output")}
            continue
        tr, mem = res["training"], res["memory"]
        rows[name] = {"seconds_per_epoch": tr["seconds_per_epoch"], "first_epoch_seconds": tr["seconds_per_epoch_first"],
                      "wall_seconds": tr["wall_seconds"], "epochs": tr["epochs_done"],
                      "peak_gpu_mb": mem.get("max_memory_allocated_mb"), "accelerations": tr["accelerations"],
                      "final_loss": tr["epochs"][-1]["loss"] if tr["epochs"] else None,
                      "final_val_loss": tr["epochs"][-1]["val_loss"] if tr["epochs"] else None,
                      "device": mem.get("cuda_device", device)}
    print(f"{'config':<24} {'s/epoch':>8} {'wall s':>8} {'GPU MB':>8} {'val loss':>9}  accelerations")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:<24} failed: {r['error']}")
            continue
        f = train_speed._fmt
        print(f"{name:<24} {f(r['seconds_per_epoch'], '.2f'):>8} {f(r['wall_seconds'], '.1f'):>8} "
              f"{f(r['peak_gpu_mb'], '.0f'):>8} {f(r['final_val_loss'], '.4g'):>9}  {r['accelerations']}")
    result = {"benchmark": "gpu_paper_scale", "quick": args.quick, "epochs": args.epochs, "device": device,
              "goal": "<= 20 s for 50 epochs on one H100 / H200", "configs": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
