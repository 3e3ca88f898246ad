"""Readers: Space Ranger ``outs/`` folders (Visium and Visium HD), imzML + ibd, H&E images and pathologist annotation CSVs.

Every reader returns SpatialData (or a Series for annotations) following docs/conventions.md: coordinates
in micrometres per sample, elements named ``{sample}_spots``, ``{sample}_visium_hires``/``_lowres``,
``{sample}_msi`` / ``{sample}_msi_tic`` and ``{sample}_he``. Long reads come as progress generators
(``iter_read_imzml``, ``iter_read_histology``) and as plain functions.
"""

from spatialmix.io.annotations import add_annotations, read_annotations
from spatialmix.io.histology import iter_read_histology, pyramid_scale_factors, read_histology
from spatialmix.io.imzml import MZ_ANCHOR, iter_read_imzml, mz_bin_centre, mz_bin_edge, mz_bin_index, read_imzml
from spatialmix.io.visium import SPOT_RADIUS_UM, locate_visium_files, read_tissue_positions, read_visium
from spatialmix.io.visium_hd import hd_bin_sizes, is_visium_hd, locate_visium_hd_files, read_visium_hd

__all__ = [
    "MZ_ANCHOR",
    "SPOT_RADIUS_UM",
    "add_annotations",
    "iter_read_histology",
    "hd_bin_sizes",
    "is_visium_hd",
    "iter_read_imzml",
    "locate_visium_files",
    "locate_visium_hd_files",
    "mz_bin_centre",
    "mz_bin_edge",
    "mz_bin_index",
    "pyramid_scale_factors",
    "read_annotations",
    "read_histology",
    "read_imzml",
    "read_tissue_positions",
    "read_visium",
    "read_visium_hd",
]
