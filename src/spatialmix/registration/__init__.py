"""Registration of MSI and H&E sections onto each sample's Visium spot frame (micrometres).

- :func:`fit_landmarks` / :func:`register_landmarks`: least-squares similarity or affine transform from
  landmark pairs (scikit-image estimation), with the landmark RMS.
- :func:`auto_register` / :func:`iter_auto_register`: automatic alignment of the MSI TIC image or the H&E
  image to the Visium tissue: tissue masks (colour / TIC, Otsu, morphology), a brute-force search over
  rotation and scale with FFT cross-correlation for the translation, then a continuous refinement.
- :func:`register_to_reference` / :func:`iter_register_to_reference` and :func:`tissue_mask`: the
  array-level cores (no SpatialData needed).
- :func:`registration_state` / :func:`restore_registration`: snapshot and undo (the napari Register widget).
- :func:`transform_error_um`: RMS distance between two transforms over given points (for validation).

The SpatialData functions write the transformation of the moving element into the sample's coordinate
system (``spatialdata.transformations.Affine``) and a JSON record in
``sdata.attrs["spatialmix"]["registration"][sample][modality]``.
"""

from ._core import RegistrationResult, iter_register_to_reference, register_to_reference
from ._landmarks import LandmarkFit, apply_matrix, fit_landmarks, transform_error_um
from ._masks import tissue_mask
from ._sdata import (
    auto_register,
    element_pixel_to_sample,
    iter_auto_register,
    iter_auto_register_all,
    register_landmarks,
    registration_state,
    restore_registration,
)

__all__ = [
    "LandmarkFit",
    "RegistrationResult",
    "apply_matrix",
    "auto_register",
    "element_pixel_to_sample",
    "fit_landmarks",
    "iter_auto_register",
    "iter_auto_register_all",
    "iter_register_to_reference",
    "register_landmarks",
    "register_to_reference",
    "registration_state",
    "restore_registration",
    "tissue_mask",
    "transform_error_um",
]
