"""The bundled demo as napari sample data (File > Open Sample > SpatialMix demo)."""

from __future__ import annotations


def load_demo() -> list[tuple]:
    """Read, register and tabulate the bundled 4-sample demo, and return its layers (samples side by side)."""
    from spatialmix.napari._layers import project_layers
    from spatialmix.pipeline import bundled_sample_data, prepare

    sdata = prepare(bundled_sample_data(), morphology=False)
    return project_layers(sdata)
