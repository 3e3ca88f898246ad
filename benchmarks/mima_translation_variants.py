"""Cross-validated translation (the benchmark's own spatialmix.evaluate.translation.translation_cv) of MIMA
variants on a non-spatial development case; median per-feature r of the model, ridge and kNN per direction.

    python benchmarks/mima_translation_variants.py CASE 'VARIANTS_JSON' OUT.jsonl
"""
import json, sys, time
import numpy as np
from spatialmix import datasets
from spatialmix.data import as_multimodal
from spatialmix.evaluate.translation import translation_cv
case = sys.argv[1]; variants = json.loads(sys.argv[2]); outf = sys.argv[3]
c = datasets.CASES[case]; path = c.build(); o = c.options(); lk = o.pop("label_key", None)
mmd = as_multimodal(path, label_key=lk, **o)
for name, v in variants.items():
    t = time.perf_counter()
    res = translation_cv(mmd, model_params=v.get("params", {}), train=v.get("train", {}), annotation_key=lk)
    tab = res.table
    out = {}
    for (d, m), row in tab.set_index(["direction", "method"]).iterrows():
        out.setdefault(d, {})[m] = round(float(row["r_feature_median"]), 4)
    rec = {"case": case, "name": name, **v, "seconds": round(time.perf_counter() - t, 1), "r": out}
    print(json.dumps(rec), flush=True)
    open(outf, "a").write(json.dumps(rec) + "\n")
