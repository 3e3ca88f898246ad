"""The development cases as the sweep scripts load them (benchmarks/mima_variants.py,
annotation_representations.py, raw_representations.py): one place for the case -> MultiModalData step."""
from __future__ import annotations

from pathlib import Path

CACHE = Path("/tmp/exp")


def case_data(case: str):
    """``spatialmix.datasets.CASES[case]`` as a :class:`~spatialmix.data.MultiModalData`: a non-spatial case read
    with its options; a spatial dataset folder prepared once (annotation ``pathologist``, batch ``batch``) and
    cached as ``/tmp/exp/<case>.zarr``."""
    from spatialmix import datasets
    from spatialmix.data import MultiModalData, as_multimodal

    c = datasets.CASES[case]
    path = c.build()
    options = c.options()
    label_key = options.pop("label_key", None)
    if options:
        return as_multimodal(path, label_key=label_key, **options)
    from spatialmix.pipeline import iter_prepare
    from spatialmix.progress import run
    from spatialmix.project import load_project, save_project

    zp = CACHE / f"{case}.zarr"
    zp.parent.mkdir(parents=True, exist_ok=True)
    if zp.exists():
        sdata = load_project(zp)
    else:
        sdata = run(iter_prepare(path, annotation_key="pathologist"))
        save_project(sdata, zp)
    return MultiModalData.from_spatialdata(sdata, annotation_key="pathologist", batch_key="batch")
