"""read_histology on TIFF / PNG / JPEG files written here."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from spatialdata.transformations import get_transformation

from spatialmix.errors import ImageFormatError, MissingImageFileError, ParameterError
from spatialmix.io import iter_read_histology, pyramid_scale_factors, read_histology
from spatialmix.progress import run


def _rgb(h=60, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _affine(el, cs):
    return get_transformation(el, to_coordinate_system=cs).to_affine_matrix(("x", "y"), ("x", "y"))


def test_rgb_tiff(tmp_path):
    img = _rgb()
    tifffile.imwrite(tmp_path / "he.tif", img, photometric="rgb")
    sdata = read_histology(tmp_path / "he.tif", sample="S1", microns_per_pixel=0.5)
    he = sdata.images["S1_he"]
    assert he.dims == ("c", "y", "x") and he.shape == (3, 60, 80) and he.dtype == np.uint8
    np.testing.assert_array_equal(he.values, img.transpose(2, 0, 1))
    np.testing.assert_allclose(_affine(he, "S1"), np.diag([0.5, 0.5, 1.0]))
    meta = sdata.attrs["spatialmix"]["samples"]["S1"]["he"]
    assert meta["microns_per_pixel"] == 0.5 and meta["levels"] == 1 and meta["shape_yx"] == [60, 80]


def test_planar_16bit_tiff_is_scaled(tmp_path):
    img = (_rgb().astype(np.uint16) * 257).transpose(2, 0, 1)  # planar (3, y, x), full 16-bit range
    tifffile.imwrite(tmp_path / "he16.tif", img, photometric="rgb", planarconfig="separate")
    he = read_histology(tmp_path / "he16.tif", sample="S1", microns_per_pixel=1.0, name="my_he").images["my_he"]
    assert he.dtype == np.uint8
    np.testing.assert_array_equal(he.values, _rgb().transpose(2, 0, 1))  # 257 * v -> v


def test_rgba_png_and_jpeg(tmp_path):
    img = _rgb()
    rgba = np.concatenate([img, np.full((60, 80, 1), 7, np.uint8)], axis=2)
    iio.imwrite(tmp_path / "he.png", rgba)
    he = read_histology(tmp_path / "he.png", sample="S2", microns_per_pixel=2.0).images["S2_he"]
    assert he.shape == (3, 60, 80)
    np.testing.assert_array_equal(he.values, img.transpose(2, 0, 1))  # alpha dropped
    smooth = np.zeros((64, 64, 3), np.uint8)
    smooth[..., 0], smooth[..., 1], smooth[..., 2] = 200, 120, 60
    iio.imwrite(tmp_path / "he.jpg", smooth, quality=95)
    he = read_histology(tmp_path / "he.jpg", sample="S2", microns_per_pixel=2.0).images["S2_he"]
    assert he.shape == (3, 64, 64)
    np.testing.assert_allclose(he.values.reshape(3, -1).mean(1), [200, 120, 60], atol=3)


def test_large_pyramidal_tiff_is_lazy_multiscale(tmp_path):
    h, w = 2100, 4400  # long side > 4096 -> pyramid down to < 1024 px
    img = np.full((h, w, 3), 240, np.uint8)
    img[1000:1400, 2000:3200] = (120, 40, 160)
    with tifffile.TiffWriter(tmp_path / "slide.tif", bigtiff=True) as tw:
        tw.write(img, tile=(512, 512), photometric="rgb", subifds=1)
        tw.write(img[::4, ::4], tile=(512, 512), photometric="rgb", subfiletype=1)
    events = []
    sdata = run(iter_read_histology(tmp_path / "slide.tif", sample="S3", microns_per_pixel=0.25),
                progress=events.append)
    assert [e.step for e in events] == [0, 1, 3] and events[-1].total == 3
    he = sdata.images["S3_he"]
    levels = [he[k]["image"] for k in sorted(he.children)]
    assert [lv.shape for lv in levels] == [(3, 2100, 4400), (3, 1050, 2200), (3, 525, 1100), (3, 262, 550)]
    assert pyramid_scale_factors((2100, 4400)) == [2, 2, 2]
    assert all(hasattr(lv.data, "dask") for lv in levels)  # not loaded
    assert sdata.attrs["spatialmix"]["samples"]["S3"]["he"]["lazy"] is True
    coarse = levels[-1].values  # 8x down: the purple block sits at rows 125..175, cols 250..400
    np.testing.assert_array_equal(coarse[:, 150, 300], [120, 40, 160])
    np.testing.assert_array_equal(coarse[:, 20, 20], [240, 240, 240])
    np.testing.assert_allclose(_affine(he["scale0"]["image"], "S3"), np.diag([0.25, 0.25, 1.0]))


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((40, 50), np.uint8), r"found a grayscale image of shape \(40, 50\)"),
        (np.zeros((40, 50, 2), np.uint8), r"found 2 channel\(s\) in shape \(40, 50, 2\)"),
        (np.zeros((40, 50, 3), np.float32), r"Unsupported pixel type float32"),
    ],
)
def test_not_rgb(tmp_path, array, match):
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, array, photometric="minisblack", planarconfig="contig" if array.ndim == 3 else None)
    with pytest.raises(ImageFormatError, match=match) as err:
        read_histology(path, sample="S1", microns_per_pixel=0.5)
    assert "bad.tif" in str(err.value) and "8-bit RGB" in str(err.value)


def test_errors(tmp_path):
    with pytest.raises(MissingImageFileError, match="H&E image not found"):
        read_histology(tmp_path / "none.tif", sample="S1", microns_per_pixel=0.5)
    tifffile.imwrite(tmp_path / "ok.tif", _rgb(), photometric="rgb")
    for bad in (0, -1, float("nan"), "abc"):
        with pytest.raises(ParameterError, match="microns_per_pixel must be a positive number"):
            read_histology(tmp_path / "ok.tif", sample="S1", microns_per_pixel=bad)
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageFormatError, match="Cannot read the image"):
        read_histology(tmp_path / "junk.png", sample="S1", microns_per_pixel=0.5)
