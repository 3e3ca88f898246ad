"""A trained model's outputs in the SpatialData, and per-spot results as images.

>>> write_results(sdata, model)                      # X_mima, X_mima_private, mima_corrected, ... + provenance
>>> v = spot_values(sdata, "msi", layer="mima_corrected", feature=798.54)   # nearest m/z within 20 ppm
>>> m = render_result(sdata, "P1_S1", v)             # RenderedMap: image (H, W), affine (row, col) -> (y, x) um

What is written, for a model written under ``key`` (default: the model's name, e.g. ``"mima"``):

============================================  ==================================================================
``<table>.obsm["X_<key>"]``                   shared (PoE) embedding, in every modality table of the model
``<m>.obsm["X_<key>_private"]``               private latent of modality ``m``
``<m>.layers["<key>_corrected"]``             batch-corrected reconstruction of ``m`` (dense float32)
``<table>.obsm["X_<key>_corrected_pca"]``     PCA-50 of every modality's corrected features: the representation
                                              for annotation prediction (NaN where a modality was not measured)
``<m>.layers["<key>_denoised"]``              denoised reconstruction of ``m`` (with each sample's batch latent)
``<t>.layers["<key>_from_<a>_and_<b>"]``      target ``t`` imputed from sources ``a``, ``b``
``<table>.obsm["X_<key>_rgb"]``               3D-UMAP RGB colouring of the PoE embedding, values in [0, 1]
``<table>.obsm["X_<key>_expert_weights"]``    each modality's (and the prior's) share of the PoE precision
``<table>.obsm["X_<key>_experts_rgb"]``       with three modalities: their shares as red, green, blue
``<m>.obsm["X_<m>_rgb"]``                     RGB colouring of the model input of ``m`` (NaN where not measured)
``<m>.obsm["X_<layer>_<m>_rgb"]``             RGB colouring of a layer of ``m`` (NaN where not measured)
``sdata.attrs["spatialmix"]["models"][key]``  provenance (model, parameters, features, training, versions)
``<table>.uns["spatialmix"][key]``            ``provenance_json`` (the same record as JSON) and ``history``
============================================  ==================================================================

Names only use letters, digits, ``_``, ``.`` and ``-``: SpatialData refuses to save other characters (so the
translation layers join their sources with ``_and_``, e.g. ``rna.layers["mima_from_msi_and_morphology"]``).

No value is invented: the corrected and denoised layers of a modality are NaN at spots where it was not
measured, and a translation layer is NaN where none of its sources was measured. A spot's unmeasured modality
gets values only in the translation layers (``<key>_from_<sources>``), which napari captions "imputed from …";
the tables' ``msi_covered`` / ``he_covered`` columns say which were measured. napari draws NaN spots
transparent.
Writing again under the same key replaces everything the previous write of that key put there.

The package, by purpose: :mod:`~spatialmix.results.write` (writing the outputs, provenance),
:mod:`~spatialmix.results.rgb` (the UMAP colouring and its helper process), :mod:`~spatialmix.results.lookup`
(one per-spot result back out, the CSV table), :mod:`~spatialmix.results.render` (rasterising per-spot values); layers too large for memory (Visium HD) are
lazy dask arrays from :mod:`spatialmix.lazy`, computed, saved and reopened block by block.
Every public name is importable from ``spatialmix.results``.
"""

from spatialmix.conventions import MODALITY_TABLES, translation_layer
from spatialmix.data import measured_only
from spatialmix.results.lookup import spot_table, spot_values
from spatialmix.results.render import MAX_RENDER_PIXELS, RenderedMap, render_result, render_spot_values
from spatialmix.results.rgb import rgb_embedding, use_umap_process
from spatialmix.results.write import (
    OUTPUTS, iter_write_results, label_sources, provenance, supported_outputs, write_results, write_translation,
)

__all__ = [
    "MAX_RENDER_PIXELS", "MODALITY_TABLES", "OUTPUTS", "RenderedMap",
    "iter_write_results", "label_sources", "measured_only", "provenance", "render_result", "render_spot_values",
    "rgb_embedding", "spot_table", "spot_values", "supported_outputs", "translation_layer", "use_umap_process",
    "write_results", "write_translation",
]
