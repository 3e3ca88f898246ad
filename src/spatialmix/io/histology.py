"""Read an H&E image (TIFF, PNG, JPEG) as an RGB uint8 SpatialData image, a pyramid when it is large.

TIFFs are read with tifffile; large ones lazily through ``aszarr`` + dask so that building the pyramid never
loads the whole slide. PNG / JPEG go through imageio (they cannot be read by tiles).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from spatialmix.errors import ImageFormatError, MissingImageFileError, check_positive
from spatialmix.progress import Progress, ProgressGen, run

#: Images whose long side exceeds this many pixels become multiscale.
MULTISCALE_ABOVE = 4096
#: The coarsest pyramid level has a long side below this many pixels.
COARSEST_BELOW = 1024
_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".svs", ".ndpi", ".scn")
_FIX = "Save the H&E as an 8-bit RGB TIFF, PNG or JPEG"


def pyramid_scale_factors(shape_yx: tuple[int, int]) -> list[int]:
    """Scale factors ``[2, 2, ...]`` for an image of ``shape_yx`` (none up to 4096 px, down to < 1024 px)."""
    long_side = max(shape_yx)
    if long_side <= MULTISCALE_ABOVE:
        return []
    factors = []
    while long_side >= COARSEST_BELOW:
        long_side = -(-long_side // 2)
        factors.append(2)
    return factors


def _is_tiff(path: Path) -> bool:
    if path.suffix.lower() in _TIFF_SUFFIXES:
        return True
    with open(path, "rb") as fh:
        return fh.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@contextlib.contextmanager
def _no_pillow_size_limit():
    """Pillow refuses images above ~179 Mpx ("decompression bomb"); the user asked for this file explicitly."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow comes with imageio
        yield
        return
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _to_cyx(arr, axes: str, path: Path):
    """Move the sample/channel axis first, squeeze singleton extra axes; error on anything but RGB(A)."""
    shape = tuple(int(s) for s in arr.shape)
    axes = axes.upper()
    extra = [i for i, a in enumerate(axes) if a not in "YXSC"]
    if any(shape[i] != 1 for i in extra):
        raise ImageFormatError(
            f"Expected a single 2-D RGB image, found shape {shape} with axes {axes!r} (several planes)", path,
            fix=f"Export one plane as RGB. {_FIX}")
    for i in sorted(extra, reverse=True):
        arr = arr[(slice(None),) * i + (0,)]
    axes = "".join(a for a in axes if a in "YXSC")
    shape = tuple(int(s) for s in arr.shape)
    chan = [i for i, a in enumerate(axes) if a in "SC"]
    if len(chan) != 1 or "Y" not in axes or "X" not in axes or arr.ndim != 3:
        kind = "grayscale" if arr.ndim == 2 else f"{arr.ndim}-D"
        raise ImageFormatError(f"Expected an RGB image, found a {kind} image of shape {shape}", path,
                               fix=f"Convert it to RGB (3 channels). {_FIX}")
    order = [chan[0], axes.index("Y"), axes.index("X")]
    if order != [0, 1, 2]:
        arr = arr.transpose(order)
    n_chan = int(arr.shape[0])
    if n_chan == 4:
        arr = arr[:3]  # RGBA: drop alpha
    elif n_chan != 3:
        raise ImageFormatError(
            f"Expected an RGB image (3 channels, or 4 with alpha), found {n_chan} channel(s) in shape {shape}",
            path, fix=f"Convert it to RGB. {_FIX}")
    return arr


def _to_uint8(arr, path: Path, declared_max: int | None = None):
    """(uint8 array, the input value mapped to 255). 16-bit images are scaled by the range they really use: a
    scanner or converter often stores 10-, 12- or 14-bit data in 16-bit samples, and dividing those by 257
    would leave an almost black image. The range is the TIFF's MaxSampleValue tag when it gives one below
    65535 that the data do not exceed, else the smallest ``2**bits - 1`` holding the data's maximum (at least 8
    bits); a warning names the file and the range used."""
    import warnings

    dtype = np.dtype(arr.dtype)
    if dtype == np.uint8:
        return arr, 255
    if dtype == np.uint16:
        data_max = arr.max()
        data_max = int(data_max.compute() if hasattr(data_max, "compute") else data_max)
        if declared_max is not None and data_max <= declared_max < 65535:  # a tag the data contradict is ignored
            top, why = int(declared_max), f"its MaxSampleValue tag says {declared_max}"
        else:
            bits = max(8, data_max.bit_length())
            top, why = 2**bits - 1, f"its largest value is {data_max}, i.e. {bits}-bit data"
        if top < 65535:
            warnings.warn(f"{path.name} stores 16-bit pixels but {why}: scaled 0-{top} to 0-255 (the full 16-bit "
                          f"range would have left an almost black image) ({path})", UserWarning, stacklevel=3)
        scaled = arr.astype(np.float32) * np.float32(255.0 / top)
        return scaled.clip(0, 255).round().astype(np.uint8), top
    raise ImageFormatError(f"Unsupported pixel type {dtype} (shape {tuple(arr.shape)})", path,
                           fix=f"Expected 8- or 16-bit RGB. {_FIX}")


def _declared_max(path: Path) -> int | None:
    """The TIFF's MaxSampleValue / SMaxSampleValue tag, when it has one."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            for name in ("SMaxSampleValue", "MaxSampleValue"):
                if name in tags:
                    value = np.max(np.atleast_1d(tags[name].value))
                    return int(value)
    except Exception:  # the tag is a hint only; the image itself was read already
        return None
    return None


def _guess_axes(shape: tuple[int, ...]) -> str:
    """Axes of an imageio array: channels last (``YX``, ``YXS``, frames first for animated files)."""
    if len(shape) == 2:
        return "YX"
    return "Q" * (len(shape) - 3) + "YXS"


def _open_tiff(path: Path) -> tuple[Any, str, bool]:
    """(array, axes, lazy): a dask array over tifffile's zarr store for large images, numpy otherwise."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = tuple(series.shape), series.axes
            big = len(shape) >= 2 and max(shape[axes.index("Y")] if "Y" in axes else 0,
                                          shape[axes.index("X")] if "X" in axes else 0) > MULTISCALE_ABOVE
            if not big:
                return series.asarray(), axes, False
    except (tifffile.TiffFileError, ValueError, IndexError, OSError) as err:
        raise ImageFormatError(f"Cannot read the TIFF ({type(err).__name__}: {err})", path, fix=_FIX) from err
    import dask.array as da
    import zarr

    # the store keeps its TiffFile open for as long as the dask array (and the image element) lives
    try:
        store = tifffile.imread(path, aszarr=True, series=0, level=0)
        arr = da.from_zarr(zarr.open_array(store, mode="r"))
        arr[(slice(0, 1),) * arr.ndim].compute()  # decode one tile now: a missing codec fails here, not later
    except Exception as err:  # tifffile / imagecodecs / zarr raise many kinds of errors
        raise ImageFormatError(f"Cannot read the TIFF ({type(err).__name__}: {err})", path, fix=_FIX) from err
    return arr, axes, True


def iter_read_histology(
    path: str | Path,
    *,
    sample: str,
    microns_per_pixel: float,
    name: str | None = None,
) -> ProgressGen:
    """Read an H&E image as an RGB uint8 image element, yielding a few progress events.

    Parameters
    ----------
    path
        TIFF (also pyramidal / BigTIFF), PNG or JPEG file. RGBA loses its alpha channel; 16-bit RGB is scaled
        to 8 bits by the range it uses (e.g. 0-4095 for 12-bit data; a warning says so when not the full 16 bits).
    sample
        Sample name; names the element and the coordinate system.
    microns_per_pixel
        Scan resolution in micrometres per pixel (e.g. 0.5 for a 20x scan).
    name
        Element name (default ``{sample}_he``).

    Returns
    -------
    SpatialData with the image ``name`` (dims ``c, y, x``; multiscale when the long side exceeds 4096 px, down
    to < 1024 px) and ``Scale([mpp, mpp])`` into the coordinate system ``sample`` (the un-registered guess).

    Raises
    ------
    ParameterError
        ``microns_per_pixel`` is not a positive number.
    MissingImageFileError, ImageFormatError
        Missing file, unreadable file, or not an RGB(A) 8/16-bit image.
    """
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale

    sample = str(sample)
    mpp = check_positive("microns_per_pixel", microns_per_pixel, where=str(path))
    path = Path(path)
    name = name or f"{sample}_he"
    stage = f"read H&E {sample}"
    if not path.is_file():
        raise MissingImageFileError("H&E image not found", path, fix="Check the path of the H&E image")
    yield Progress(stage, 0, 3, f"opening {path.name}")
    if _is_tiff(path):
        arr, axes, lazy = _open_tiff(path)
    else:
        import imageio.v3 as iio

        try:
            with _no_pillow_size_limit():
                arr = np.asarray(iio.imread(path))
        except Exception as err:  # imageio raises many kinds of errors for unreadable files
            raise ImageFormatError(f"Cannot read the image ({type(err).__name__}: {err})", path, fix=_FIX) from err
        axes, lazy = _guess_axes(arr.shape), False
    shape_in, dtype_in = tuple(int(s) for s in arr.shape), str(arr.dtype)
    declared = _declared_max(path) if _is_tiff(path) and np.dtype(arr.dtype) == np.uint16 else None
    arr, value_range = _to_uint8(_to_cyx(arr, axes, path), path, declared)
    h, w = int(arr.shape[1]), int(arr.shape[2])
    factors = pyramid_scale_factors((h, w))
    yield Progress(stage, 1, 3, f"{w} x {h} px" + (f", building {len(factors) + 1} levels" if factors else ""))
    kwargs: dict[str, Any] = {}
    if factors:
        import dask.array as da

        arr = da.from_array(arr, chunks=(3, 2048, 2048)) if not lazy else arr.rechunk((3, 2048, 2048))
        kwargs["scale_factors"] = factors
        kwargs["chunks"] = (3, 2048, 2048)
    image = Image2DModel.parse(
        arr, dims=("c", "y", "x"), c_coords=["r", "g", "b"],
        transformations={sample: Scale([mpp, mpp], axes=("y", "x"))}, **kwargs,
    )
    meta = {
        "path": str(path.resolve()),
        "element": name,
        "microns_per_pixel": mpp,
        "shape_yx": [h, w],
        "levels": len(factors) + 1,
        "source_shape": list(shape_in),
        "source_dtype": dtype_in,
        "source_max": int(value_range),  # the input value shown as 255
        "lazy": bool(lazy),
    }
    yield Progress(stage, 3, 3, "done")
    return SpatialData(images={name: image}, attrs={"spatialmix": {"samples": {sample: {"he": meta}}}})


def read_histology(path: str | Path, *, sample: str, microns_per_pixel: float, name: str | None = None):
    """Read an H&E image as an RGB uint8 image element (see :func:`iter_read_histology`).

    Parameters
    ----------
    path, sample, microns_per_pixel, name
        As in :func:`iter_read_histology`.

    Returns
    -------
    SpatialData with the image ``{sample}_he`` (or ``name``).
    """
    return run(iter_read_histology(path, sample=sample, microns_per_pixel=microns_per_pixel, name=name))
