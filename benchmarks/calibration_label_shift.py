"""Multi-batch calibration under label shift (issue 17, item 3): target macro-F1 of the calibration with and
without ``label_shift`` (ours: source spots weighted in the MMD by the estimated target / source class share)
beside logistic regression on the raw source features, on the test's synthetic data with three class
compositions (3 seeds each, 60 epochs, 1 thread). Prints a table and writes JSON.

    python benchmarks/calibration_label_shift.py --out benchmarks/results/calibration_label_shift.json

Settings (sources B0, B1 / targets B2, B3): ``source_only_class`` (class3 30 % of the sources, absent from the
targets), ``skewed`` (sources 55/15/15/15 %, targets 5/15/20/60 %, the composition tried before issue 17) and
``equal`` (the paper's setting, 25 % each). F1 is averaged over the classes the targets have.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

SETTINGS = {"source_only_class": ([0.25, 0.25, 0.2, 0.3], [0.34, 0.33, 0.33, 0.0]),
            "skewed": ([0.55, 0.15, 0.15, 0.15], [0.05, 0.15, 0.2, 0.6]),
            "equal": ([0.25] * 4, [0.25] * 4)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=60)
    args = p.parse_args(argv)

    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler

    from spatialmix.models.calibration import Calibration
    from test_calibration import shift_data

    torch.set_num_threads(1)
    rows = []
    for name, (src_comp, tgt_comp) in SETTINGS.items():
        for seed in range(args.seeds):
            data = shift_data(src_comp, tgt_comp, seed=seed)
            b, truth = data.obs["batch"].to_numpy(), data.obs["truth"].to_numpy()
            src = np.isin(b, ["B0", "B1"])
            present = sorted(set(truth[~src]))
            raw = StandardScaler().fit_transform(np.concatenate([data.dense(m) for m in data.modalities], 1))
            lr = LogisticRegression(max_iter=2000).fit(raw[src], truth[src]).predict(raw[~src])
            row = {"setting": name, "seed": seed, "source_composition": src_comp, "target_composition": tgt_comp,
                   "logistic_regression": f1_score(truth[~src], lr, labels=present, average="macro")}
            for key, params in (("paper", {"label_shift": False}), ("label_shift", {"label_shift": True})):
                m = Calibration(data, seed=seed, **params)
                m.train(epochs=args.epochs, step_events=False, seed=seed)
                pred = m.predict_labels()["label"].astype(str).to_numpy()[~src]
                row[key] = f1_score(truth[~src], pred, labels=present, average="macro")
                row[f"{key}_predicted_target_share"] = {c: round(float(np.mean(pred == c)), 3)
                                                        for c in m.params["classes"]}
                if key == "label_shift":
                    row["estimated_target_composition"] = np.round(m.module.target_prior.numpy(), 3).tolist()
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| setting | logistic regression | calibration (paper's MMD) | calibration, label_shift=True |")
    print("|---|---|---|---|")
    summary = {}
    for name in SETTINGS:
        r = [x for x in rows if x["setting"] == name]
        summary[name] = {k: round(float(np.mean([x[k] for x in r])), 3) for k in ("logistic_regression", "paper", "label_shift")}
        s = summary[name]
        print(f"| {name} | {s['logistic_regression']:.3f} | {s['paper']:.3f} | {s['label_shift']:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"epochs": args.epochs, "seeds": args.seeds, "summary": summary, "runs": rows},
                                   indent=2))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
