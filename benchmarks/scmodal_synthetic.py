"""scMODAL variants on the test suite's synthetic unpaired data (``tests/test_scmodal.py::unpaired_data``): five
training seeds per variant, the test's small network and training (400 steps, batch 256), median and worst
FOSCTTM and 15-NN label transfer both ways, beside the PCA of the standardised linked features. Prints a table and
appends JSON lines.

    python benchmarks/scmodal_synthetic.py --variant NAME '{"hidden_layer": "relu"}' [--variant ...] \
        --out benchmarks/results/scmodal_synthetic.jsonl

The claims of ``test_aligns_unpaired_modalities_better_than_pca_of_the_linked_features`` are medians over the same
five trainings (seeds ``_claims.seed(k)``, k = 0..4, i.e. 0..4 unless SPATIALMIX_TEST_SEED shifts them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
from scmodal_unpaired import _zs  # noqa: E402  (the benchmark next to this one)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "PARAMS_JSON"), required=True)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    import torch
    from sklearn.decomposition import PCA

    torch.set_num_threads(args.threads)
    from test_scmodal import SMALL, TRAIN, unpaired_data  # the test's data, network size and training

    from spatialmix.evaluate.metrics import foscttm, label_transfer_accuracy
    from spatialmix.models.scmodal import SCMODAL

    data, links = unpaired_data()
    n, k = data.n_obs, len(links)
    pc = PCA(k).fit_transform(np.vstack([_zs(data.dense("rna")[:, :k]), _zs(data.dense("msi")[:, :k])]))
    base = round(foscttm(pc[:n], pc[n:]), 4)
    print(f"linked-feature PCA FOSCTTM {base}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name, params_json in args.variant:
        params = {**SMALL, **json.loads(params_json)}
        rows, t0 = [], time.perf_counter()
        for s in range(args.seeds):
            model = SCMODAL(data, links={"rna|msi": links}, **params, seed=s)
            model.train(**TRAIN, seed=s)
            a, b = model.get_latent_representation("rna"), model.get_latent_representation("msi")
            rows.append([foscttm(a, b), label_transfer_accuracy(a, data.labels, b, data.labels),
                         label_transfer_accuracy(b, data.labels, a, data.labels)])
        r = np.array(rows)
        out = {"variant": name, "params": params, "train": TRAIN, "seeds": args.seeds, "linked_pca_foscttm": base,
               "median": dict(zip(("foscttm", "rna_to_msi", "msi_to_rna"), np.round(np.median(r, 0), 4).tolist())),
               "worst": {"foscttm": round(float(r[:, 0].max()), 4), "rna_to_msi": round(float(r[:, 1].min()), 4),
                         "msi_to_rna": round(float(r[:, 2].min()), 4)},
               "per_seed": np.round(r, 4).tolist(), "seconds": round(time.perf_counter() - t0, 1)}
        print(json.dumps(out), flush=True)
        with args.out.open("a") as f:
            f.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
