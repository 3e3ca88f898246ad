"""napari integration: readers, sample data and (later) dock widgets.

This layer is thin: it converts SpatialData elements into napari layer data (:mod:`._layers`, no Qt) and runs
the headless API in workers. Nothing here re-implements core logic.
"""
