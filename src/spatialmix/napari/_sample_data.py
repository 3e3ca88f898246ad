"""The bundled demo as napari sample data (File > Open Sample > SpatialMix demo)."""

from __future__ import annotations


def load_demo() -> list[tuple]:
    """The bundled 4-sample demo, read, registered and tabulated (cached after the first time), as layers."""
    from spatialmix.napari._layers import project_layers
    from spatialmix.jobs import iter_demo_project
    from spatialmix.progress import run

    return project_layers(run(iter_demo_project()))
