"""Read an imzML + ibd pair (continuous or processed) into a binned pixel table and a TIC image.

The XML metadata (spectrum offsets, lengths, pixel coordinates, data types, UUID) is parsed by pyimzML's
:class:`~pyimzml.ImzMLParser.ImzMLParser`; files it cannot read (binary-array settings written inline, as R's
MALDIquantForeign does, or zlib-compressed arrays) by :func:`_parse_metadata_xml`. The spectra are then streamed from the ``.ibd`` in chunks and
binned onto the anchored ppm m/z grid of docs/conventions.md; only the binned values (a growing CSR buffer) and
one chunk of raw spectra are ever in memory.

Why one file of about 840 lines: it is one reader. Every step after the parse works on one parsed header,
``_ImzMLInfo`` (offsets, lengths, data types, pixel coordinates), and bins onto the one m/z grid defined at the
top; the two metadata parsers exist only to fill ``_ImzMLInfo``, and the child process of ``_parse_metadata``
imports ``_parse_metadata_here`` from this module by name.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spatialmix.errors import ImzMLError, MissingImzMLFileError, ParameterError, check_positive
from spatialmix.progress import Progress, ProgressGen, run

#: Lower edge of m/z bin 0; bin ``k`` spans ``[MZ_ANCHOR * r**k, MZ_ANCHOR * r**(k+1))``, ``r = 1 + ppm * 1e-6``.
MZ_ANCHOR = 50.0
NORMALIZATIONS = ("tic", "none", "rms")
#: A chunk never holds more than this many raw (m/z, intensity) values, whatever ``chunk_size`` says, so that
#: continuous profile spectra with 10^5 channels do not blow up memory (results do not depend on chunking).
MAX_VALUES_PER_CHUNK = 1_000_000
_DTYPES = {"f": np.float32, "d": np.float64, "i": np.int32, "l": np.int64}


# ----------------------------------------------------------------------------------------------- m/z grid
def mz_bin_index(mz: np.ndarray | float, bin_ppm: float) -> np.ndarray:
    """Index ``k`` of the anchored ppm bin holding each m/z (``MZ_ANCHOR * r**k <= mz < MZ_ANCHOR * r**(k+1)``)."""
    mz = np.asarray(mz, dtype=np.float64)
    t = mz / MZ_ANCHOR
    np.log(t, out=t)
    t /= math.log(1 + bin_ppm * 1e-6)
    np.floor(t, out=t)
    k = t.astype(np.int64)
    del t
    # correct the rare off-by-one of the floating-point logarithm right at a bin edge
    k -= mz < mz_bin_edge(k, bin_ppm)
    k += mz >= mz_bin_edge(k + 1, bin_ppm)
    return k


def mz_bin_edge(k: np.ndarray | int, bin_ppm: float) -> np.ndarray:
    """Lower edge ``MZ_ANCHOR * r**k`` of bin(s) ``k``."""
    return MZ_ANCHOR * np.power(1 + bin_ppm * 1e-6, np.asarray(k, dtype=np.float64))


def mz_bin_centre(k: np.ndarray | int, bin_ppm: float) -> np.ndarray:
    """Centre of bin(s) ``k``: the geometric mean of its edges, ``MZ_ANCHOR * r**(k + 1/2)``."""
    return MZ_ANCHOR * np.power(1 + bin_ppm * 1e-6, np.asarray(k, dtype=np.float64) + 0.5)


# ----------------------------------------------------------------------------------------------- checks
def _check_params(pixel_size_um, mz_range, bin_ppm, normalize, chunk_size) -> tuple[float, tuple | None, float]:
    pixel_size_um = check_positive("pixel_size_um", pixel_size_um)
    try:
        bin_ppm_f = float(bin_ppm)
    except (TypeError, ValueError):
        bin_ppm_f = float("nan")
    if not (np.isfinite(bin_ppm_f) and bin_ppm_f > 0):
        raise ParameterError(f"bin_ppm must be a positive number of parts per million, got {bin_ppm!r}. "
                             "Typical values are 5-50 (default 20)")
    if normalize not in NORMALIZATIONS:
        raise ParameterError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ParameterError(f"chunk_size must be a positive integer (spectra per chunk), got {chunk_size!r}")
    rng = None
    if mz_range is not None:
        try:
            lo, hi = (float(v) for v in mz_range)
        except (TypeError, ValueError):
            raise ParameterError(f"mz_range must be a pair (low, high) of m/z values, got {mz_range!r}") from None
        if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
            raise ParameterError(f"mz_range must satisfy 0 < low < high (finite m/z values), got {mz_range!r}. "
                                 "Example: mz_range=(400, 1000)")
        rng = (lo, hi)
    return pixel_size_um, rng, bin_ppm_f


def _find_ibd(imzml: Path) -> Path | None:
    for cand in imzml.parent.glob("*"):
        if cand.stem == imzml.stem and cand.suffix.lower() == ".ibd" and cand.is_file():
            return cand
    return None


#: imzML files larger than this are parsed in a child process (see :func:`_parse_metadata`).
SUBPROCESS_PARSE_BYTES = 32 * 1024**2


#: cvParam accessions of the imzML 1.1 / mzML binary-array settings (used by :func:`_parse_metadata_xml`)
_DTYPE_ACCESSIONS = {"MS:1000521": "f", "MS:1000523": "d", "IMS:1000141": "i", "MS:1000519": "i",
                     "IMS:1000142": "l", "MS:1000522": "l"}
_ZLIB, _NO_COMPRESSION = "MS:1000574", "MS:1000576"


def _parse_metadata_xml(imzml: Path) -> dict:
    """Our own parse of the imzML XML, used only where pyimzML cannot read a valid file (see
    :func:`_parse_metadata_here`): pyimzML 1.5.5 expects every ``binaryDataArray`` to point at a
    ``referenceableParamGroup`` and the pixel position inside ``scanList/scan``, but imzML 1.1 (an mzML
    extension) also allows the settings inline, as R's MALDIquantForeign writes them. This reads the settings
    either way (inline cvParams override the referenced group's), the data types (32/64-bit float / int), zlib
    compression (then the encoded byte lengths), and the pixel position anywhere inside the spectrum."""
    import xml.etree.ElementTree as ET

    ns = "{http://psi.hupo.org/ms/mzml}"
    groups: dict[str, dict[str, str]] = {}
    file_params: dict[str, str] = {}
    scan_settings: dict[str, str] = {}
    rows: dict[str, list] = {k: [] for k in ("mz_offsets", "mz_lengths", "mz_encoded", "int_offsets", "int_lengths",
                                             "int_encoded", "coords")}
    kinds: dict[str, set] = {"mz": set(), "int": set()}

    def params(elem) -> dict[str, str]:
        out: dict[str, str] = {}
        for child in elem:
            if child.tag == ns + "referenceableParamGroupRef":
                out.update(groups.get(child.attrib.get("ref", ""), {}))
        for child in elem:
            if child.tag == ns + "cvParam":
                out[child.attrib.get("accession", "")] = child.attrib.get("value", "")
                out["name:" + child.attrib.get("name", "")] = child.attrib.get("value", "")
        return out

    def whole(value, what: str, index: int) -> int:
        try:
            return int(float(value))
        except (TypeError, ValueError):
            raise ImzMLError(f"Spectrum {index}: {what} is {value!r}, not a number", imzml,
                             fix="The file is corrupt; re-export it") from None

    index = 0
    for _, elem in ET.iterparse(str(imzml), events=("end",)):
        tag = elem.tag
        if tag == ns + "referenceableParamGroup":
            groups[elem.attrib.get("id", "")] = params(elem)
        elif tag == ns + "fileContent":
            file_params = params(elem)
        elif tag == ns + "scanSettings":
            scan_settings.update(params(elem))
        elif tag == ns + "spectrum":
            found = {}
            for arr in elem.iter(ns + "binaryDataArray"):
                p = params(arr)
                which = "mz" if "MS:1000514" in p else "int" if "MS:1000515" in p else None
                if which is None:
                    continue
                dtype = next((code for acc, code in _DTYPE_ACCESSIONS.items() if acc in p), None)
                compression = "zlib" if _ZLIB in p else "none" if (_NO_COMPRESSION in p or not any(
                    "compression" in acc for acc in p)) else "other"
                kinds[which].add((dtype, compression))
                found[which] = (whole(p.get("IMS:1000102"), "external offset", index),
                                whole(p.get("IMS:1000103"), "external array length", index),
                                whole(p.get("IMS:1000104", -1), "external encoded length", index))
            if set(found) != {"mz", "int"}:
                raise ImzMLError(f"Spectrum {index} lacks its {'m/z' if 'mz' not in found else 'intensity'} array "
                                 "settings", imzml, fix="The file is corrupt; re-export it")
            pos = {}
            for cv in elem.iter(ns + "cvParam"):
                acc = cv.attrib.get("accession")
                if acc in ("IMS:1000050", "IMS:1000051"):
                    pos[acc] = whole(cv.attrib.get("value"), "the pixel position", index)
            if len(pos) != 2:
                raise ImzMLError(f"Spectrum {index} has no pixel position (IMS:1000050 / IMS:1000051)", imzml,
                                 fix="The file is corrupt; re-export it")
            for which in ("mz", "int"):
                off, length, enc = found[which]
                rows[f"{which}_offsets"].append(off)
                rows[f"{which}_lengths"].append(length)
                rows[f"{which}_encoded"].append(enc)
            rows["coords"].append((pos["IMS:1000050"], pos["IMS:1000051"], 1))
            index += 1
            elem.clear()
    if not index:
        raise ImzMLError("The imzML lists no spectra", imzml, fix="Re-export the dataset with its spectra")
    codes = {}
    for which, name in (("mz", "m/z"), ("int", "intensity")):
        if len(kinds[which]) != 1:
            raise ImzMLError(f"The {name} arrays use different data types or compressions across spectra "
                             f"({sorted(map(str, kinds[which]))})", imzml,
                             fix="Re-export the imzML with one data type per array")
        dtype, compression = next(iter(kinds[which]))
        if dtype is None:
            raise ImzMLError(f"The {name} arrays declare no supported data type", imzml,
                             fix="Export m/z and intensities as 32/64-bit floats or integers")
        if compression == "other":
            raise ImzMLError(f"The {name} arrays use a compression other than zlib", imzml,
                             fix="Re-export the imzML with zlib compression or none")
        codes[which] = (dtype, compression)
        if compression == "zlib" and min(rows[f"{which}_encoded"]) < 0:
            raise ImzMLError(f"The {name} arrays are zlib-compressed but give no 'external encoded length'",
                             imzml, fix="The file is corrupt; re-export it")
    return {
        "uuid": np.array(str(file_params.get("IMS:1000080", "") or "")),
        "mz_dtype": np.array(np.dtype(_DTYPES[codes["mz"][0]]).str),
        "int_dtype": np.array(np.dtype(_DTYPES[codes["int"][0]]).str),
        "mz_compressed": np.array(codes["mz"][1] == "zlib"),
        "int_compressed": np.array(codes["int"][1] == "zlib"),
        # by name too: MALDIquantForeign 0.13 writes "processed" with accession IMS:1000032
        "declared_mode": np.array("continuous" if {"IMS:1000030", "name:continuous"} & set(file_params) else
                                  "processed" if {"IMS:1000031", "name:processed"} & set(file_params) else ""),
        "max_x": np.array(int(float(scan_settings.get("IMS:1000042") or 0))),
        "max_y": np.array(int(float(scan_settings.get("IMS:1000043") or 0))),
        **{k: np.asarray(v, dtype=np.int64) for k, v in rows.items()},
    }


def _parse_metadata_here(imzml: Path) -> dict:
    """pyimzML parse of the imzML XML, reduced to numpy arrays and scalars (raises ImzMLError).

    Where pyimzML fails on a file (inline binary-array settings, compressed arrays), the XML is parsed by
    :func:`_parse_metadata_xml` instead; when that fails too, pyimzML's error is reported.
    """
    from pyimzml.ImzMLParser import ImzMLParser

    try:
        with warnings.catch_warnings():  # cvParams outside pyimzML's ontology (e.g. MALDIquantForeign's) are harmless
            warnings.filterwarnings("ignore", message="Unrecognized accession")
            try:
                import lxml  # noqa: F401  # faster XML parsing for big files

                parser = ImzMLParser(str(imzml), parse_lib="lxml", ibd_file=None)
            except ImportError:
                parser = ImzMLParser(str(imzml), ibd_file=None)
    except Exception as err:  # XML syntax errors (lxml / ElementTree), missing cvParams, inline settings, ...
        try:
            return _parse_metadata_xml(imzml)
        except ImzMLError:
            raise
        except Exception:
            pass
        raise ImzMLError(f"Cannot parse the imzML metadata ({type(err).__name__}: {err})", imzml,
                         fix="Check that the file is a complete imzML 1.1 file (re-export it)") from err
    if not parser.coordinates:
        raise ImzMLError("The imzML lists no spectra", imzml, fix="Re-export the dataset with its spectra")
    groups = parser.metadata.referenceable_param_groups
    for gid in (parser.mzGroupId, parser.intGroupId):
        params = groups[gid].param_by_name if gid in groups else {}
        if any("compression" in name and name != "no compression" for name in params):
            return _parse_metadata_xml(imzml)  # pyimzML gives no encoded lengths of compressed arrays
    if parser.mzPrecision not in _DTYPES or parser.intensityPrecision not in _DTYPES:
        raise ImzMLError(
            f"Unsupported binary data types (m/z: {parser.mzPrecision}, intensity: {parser.intensityPrecision})",
            imzml, fix="Export m/z and intensities as 32/64-bit floats or integers")
    fd = parser.metadata.file_description.param_by_name
    meta = parser.imzmldict
    return {
        "uuid": np.array(str(fd.get("universally unique identifier", "") or "")),
        "mz_dtype": np.array(np.dtype(_DTYPES[parser.mzPrecision]).str),
        "int_dtype": np.array(np.dtype(_DTYPES[parser.intensityPrecision]).str),
        "declared_mode": np.array("continuous" if "continuous" in fd else "processed" if "processed" in fd else ""),
        "max_x": np.array(int(meta.get("max count of pixels x") or 0)),
        "max_y": np.array(int(meta.get("max count of pixels y") or 0)),
        "mz_offsets": np.asarray(parser.mzOffsets, dtype=np.int64),
        "mz_lengths": np.asarray(parser.mzLengths, dtype=np.int64),
        "int_offsets": np.asarray(parser.intensityOffsets, dtype=np.int64),
        "int_lengths": np.asarray(parser.intensityLengths, dtype=np.int64),
        "coords": np.asarray(parser.coordinates, dtype=np.int64),
    }


def _parse_metadata(imzml: Path) -> dict:
    """The imzML metadata as numpy arrays.

    pyimzML keeps several Python objects per spectrum while it parses (~300 bytes each: 30 MB for 100,000
    pixels), and CPython does not hand that memory back to the OS after the lists are dropped, so it would sit
    on top of the binned table for the whole read. Large files are therefore parsed by pyimzML in a short-lived
    child Python process that returns only the arrays (an .npz in a temporary folder); small files in-process.
    """
    if imzml.stat().st_size <= SUBPROCESS_PARSE_BYTES:
        return _parse_metadata_here(imzml)
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="spatialmix-imzml-") as tmp:
        out = Path(tmp) / "meta.npz"
        code = ("import sys, json, numpy as np\n"
                "from pathlib import Path\n"
                "from spatialmix.io.imzml import _parse_metadata_here\n"
                "try:\n"
                "    np.savez(sys.argv[2], **_parse_metadata_here(Path(sys.argv[1])))\n"
                "except Exception as err:\n"
                "    print(json.dumps({'error': str(err)}))\n"
                "    sys.exit(3)\n")
        proc = subprocess.run([sys.executable, "-c", code, str(imzml), str(out)], capture_output=True, text=True)
        if proc.returncode == 3:
            err = ImzMLError(json.loads(proc.stdout.strip().splitlines()[-1])["error"])  # already names the file
            err.path = imzml
            raise err
        if proc.returncode != 0 or not out.exists():
            raise ImzMLError(f"Parsing the imzML metadata failed ({proc.stderr.strip()[-500:]})", imzml,
                             fix="Check that the file is a complete imzML 1.1 file (re-export it)")
        with np.load(out) as npz:
            return {k: npz[k] for k in npz.files}


class _ImzMLInfo:
    """What the reader needs from the imzML metadata, as numpy arrays (pyimzML's per-spectrum lists freed)."""

    def __init__(self, imzml: Path, ibd: Path):
        meta = _parse_metadata(imzml)
        self.uuid = str(meta["uuid"])
        self.mz_dtype = np.dtype(str(meta["mz_dtype"]))
        self.int_dtype = np.dtype(str(meta["int_dtype"]))
        self.mz_offsets = meta["mz_offsets"]
        self.mz_lengths = meta["mz_lengths"]
        self.int_offsets = meta["int_offsets"]
        self.int_lengths = meta["int_lengths"]
        # zlib-compressed arrays: their byte lengths in the .ibd (None: uncompressed, length * itemsize)
        self.mz_encoded = meta["mz_encoded"] if bool(meta.get("mz_compressed", False)) else None
        self.int_encoded = meta["int_encoded"] if bool(meta.get("int_compressed", False)) else None
        coords = meta["coords"]
        self.x = coords[:, 0] - 1  # imzML is 1-based
        self.y = coords[:, 1] - 1
        self.max_x = int(meta["max_x"])
        self.max_y = int(meta["max_y"])
        declared = str(meta["declared_mode"])
        if declared:
            self.mode = declared
        else:  # not declared: continuous when every spectrum points at the same m/z array
            self.mode = "continuous" if np.all(self.mz_offsets == self.mz_offsets[0]) else "processed"
        del meta, coords
        if np.any(self.mz_lengths != self.int_lengths):
            bad = int(np.flatnonzero(self.mz_lengths != self.int_lengths)[0])
            raise ImzMLError(f"Spectrum {bad} has {self.mz_lengths[bad]} m/z values but "
                             f"{self.int_lengths[bad]} intensities", imzml, fix="The file is corrupt; re-export it")
        if self.x.min() < 0 or self.y.min() < 0:
            raise ImzMLError("Pixel coordinates must be >= 1 (imzML is 1-based)", imzml,
                             fix="Re-export the dataset with valid pixel coordinates")
        self.n = len(self.x)
        for axis, pos, declared in (("x", self.x, self.max_x), ("y", self.y, self.max_y)):
            if declared > 0 and pos.max() >= declared:  # a corrupted coordinate would grow the image
                bad = np.flatnonzero(pos >= declared)
                raise ImzMLError(
                    f"Spectrum {int(bad[0])} lies at {axis}={int(pos[bad[0]]) + 1}, beyond the declared raster "
                    f"('max count of pixels {axis}' = {declared}); {len(bad)} spectrum(s) lie outside", imzml,
                    fix="The coordinates or the header are corrupt; re-export the imzML (or correct the header's "
                    f"max count of pixels {axis} if the coordinates are right)")
        self.width = max(int(self.x.max()) + 1, self.max_x)
        self.height = max(int(self.y.max()) + 1, self.max_y)
        flat = self.y * self.width + self.x
        uniq, counts = np.unique(flat, return_counts=True)
        if len(uniq) != self.n:
            dup = uniq[counts > 1][:3]
            where = ", ".join(f"(x={d % self.width + 1}, y={d // self.width + 1})" for d in dup)
            raise ImzMLError(f"{self.n - len(uniq)} spectra share a pixel with another one, e.g. at {where}", imzml,
                             fix="3-D or multi-region files must be split into one 2-D raster per file")
        self.check_ibd(imzml, ibd)

    def check_ibd(self, imzml: Path, ibd: Path) -> None:
        size = ibd.stat().st_size
        if self.uuid:
            want = re.sub(r"[^0-9a-fA-F]", "", self.uuid).lower()
            with open(ibd, "rb") as fh:
                head = fh.read(16).hex()
            if len(head) < 32:
                raise ImzMLError(f"The .ibd file is truncated: {size} bytes, shorter than its 16-byte UUID header",
                                 ibd, fix="Copy the complete .ibd file again")
            if want and head != want:
                raise ImzMLError(
                    f"UUID mismatch: {imzml.name} declares {self.uuid} but the first 16 bytes of {ibd.name} are "
                    f"{head}", ibd, fix="The .imzML and .ibd files come from different exports; use the pair "
                    "written together")
        need = 0
        if self.n:
            need = int(max((self.mz_offsets + self.nbytes("mz")).max(), (self.int_offsets + self.nbytes("int")).max()))
        if size < need:
            raise ImzMLError(
                f"The .ibd file is truncated: {size} bytes, but {imzml.name} references data up to byte {need}",
                ibd, fix="The copy or export was interrupted; copy the complete .ibd file again")


    def nbytes(self, which: str) -> np.ndarray:
        """Bytes of each spectrum's m/z (``"mz"``) or intensity (``"int"``) array in the .ibd."""
        encoded = self.mz_encoded if which == "mz" else self.int_encoded
        if encoded is not None:
            return encoded
        return (self.mz_lengths * self.mz_dtype.itemsize if which == "mz" else
                self.int_lengths * self.int_dtype.itemsize)

    def request(self, which: str, start: int, stop: int) -> tuple:
        """The :func:`_read_arrays` request of spectra ``start:stop``'s m/z or intensity arrays."""
        if which == "mz":
            enc = None if self.mz_encoded is None else self.mz_encoded[start:stop]
            return self.mz_offsets[start:stop], self.mz_lengths[start:stop], self.mz_dtype, enc
        enc = None if self.int_encoded is None else self.int_encoded[start:stop]
        return self.int_offsets[start:stop], self.int_lengths[start:stop], self.int_dtype, enc


def _resolve_paths(path: str | Path) -> tuple[Path, Path]:
    imzml = Path(path)
    if imzml.suffix.lower() == ".ibd":
        imzml = imzml.with_suffix(".imzML")
    if not imzml.is_file():
        raise MissingImzMLFileError("imzML file not found", imzml,
                                    fix="Give the path of the .imzML file (its .ibd must lie next to it)")
    ibd = _find_ibd(imzml)
    if ibd is None:
        expected = imzml.with_suffix(".ibd")
        raise MissingImzMLFileError(
            f"No .ibd binary file next to {imzml.name}; looked for {expected}", expected,
            fix="Copy the .ibd file written with the .imzML into the same folder, with the same name",
        )
    return imzml, ibd


# ----------------------------------------------------------------------------------------------- buffers
class _GrowingArray:
    """1-D append buffer for the binned values.

    It starts with ``capacity`` entries from ``np.empty`` (pages the OS only backs once written, so a generous
    upper bound costs no resident memory) and grows in place with ``ndarray.resize`` (realloc) if the bound
    was too small; :meth:`finish` shrinks it to the entries written, again in place.
    """

    def __init__(self, dtype, capacity: int):
        self.a = np.empty(max(int(capacity), 1024), dtype=dtype)
        self.n = 0

    def extend(self, values: np.ndarray) -> None:
        need = self.n + len(values)
        if need > len(self.a):
            self.a.resize(max(need, int(len(self.a) * 1.5)), refcheck=False)
        self.a[self.n:need] = values
        self.n = need

    def finish(self) -> np.ndarray:
        self.a.resize(self.n, refcheck=False)
        out, self.a = self.a, np.empty(0, dtype=self.a.dtype)
        return out


def _read_arrays(fh, requests: list[tuple]) -> list[np.ndarray]:
    """Read, for each ``(offsets, lengths, dtype, encoded)`` request, the .ibd arrays at ``offsets`` concatenated.

    ``encoded`` is None for uncompressed arrays, else the byte length of each zlib-compressed array. When the
    requested bytes lie close together (the usual layout: one spectrum's m/z and intensities after the other's)
    the whole span is read with one ``read`` call; otherwise array by array.
    """
    if any(r[3] is not None for r in requests):
        import zlib

        outs = []
        for offsets, lengths, dtype, encoded in requests:
            out = np.empty(int(lengths.sum()), dtype=dtype)
            pos = 0
            for off, ln, enc in zip(offsets.tolist(), lengths.tolist(),
                                    (encoded if encoded is not None else lengths * dtype.itemsize).tolist()):
                fh.seek(off)
                raw = fh.read(enc)
                try:
                    raw = zlib.decompress(raw) if encoded is not None else raw
                    out[pos:pos + ln] = np.frombuffer(raw, dtype=dtype, count=ln)
                except (zlib.error, ValueError) as err:
                    raise ImzMLError(f"The array at byte {off} of the .ibd cannot be read ({err})", fh.name,
                                     fix="The .ibd is corrupt or truncated; copy or re-export it") from None
                pos += ln
            outs.append(out)
        return outs
    requests = [r[:3] for r in requests]
    needed = sum(int(ln.sum()) * dt.itemsize for _, ln, dt in requests)
    first = min(int(off.min()) for off, _, _ in requests)
    last = max(int((off + ln * dt.itemsize).max()) for off, ln, dt in requests)
    outs = [np.empty(int(ln.sum()), dtype=dt) for _, ln, dt in requests]
    if last - first <= 2 * needed + (1 << 20):
        fh.seek(first)
        buf = fh.read(last - first)
        for out, (offsets, lengths, dtype) in zip(outs, requests):
            pos = 0
            for off, ln in zip((offsets - first).tolist(), lengths.tolist()):
                out[pos:pos + ln] = np.frombuffer(buf, dtype=dtype, count=ln, offset=off)
                pos += ln
        return outs
    for out, (offsets, lengths, dtype) in zip(outs, requests):
        pos = 0
        for off, ln in zip(offsets.tolist(), lengths.tolist()):
            fh.seek(off)
            out[pos:pos + ln] = np.frombuffer(fh.read(ln * dtype.itemsize), dtype=dtype)
            pos += ln
    return outs


def _sum_per_pixel_bin(rows: np.ndarray, k: np.ndarray, vals: np.ndarray, m: int):
    """Sum the values of equal (row, bin) pairs: returns (sums float32, bin ids, non-zeros per row).

    Both are combined into one int64 key; spectra are usually sorted by m/z, so the keys usually are too and
    no sort is needed. Summation runs per pixel in file order, so results do not depend on chunking.
    """
    k0 = int(k.min())
    span = int(k.max()) - k0 + 1
    key = rows * span
    key += k
    key -= k0
    if np.any(key[1:] < key[:-1]):
        order = np.argsort(key, kind="stable")
        key, vals = key[order], vals[order]
        del order
    first = np.empty(len(key), dtype=bool)
    first[0] = True
    np.not_equal(key[1:], key[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    del first
    sums = np.add.reduceat(vals, starts).astype(np.float32)
    ukey = key[starts]
    del key, starts
    nz = sums != 0
    sums, ukey = sums[nz], ukey[nz]
    r = ukey // span
    counts = np.bincount(r, minlength=m)
    ukey -= r * span
    ukey += k0
    return sums, ukey, counts


def _count_bad_values(vals: np.ndarray, rows: np.ndarray, m: int, start: int, n_nonfinite: np.ndarray,
                      n_negative: np.ndarray) -> np.ndarray:
    """Which raw intensities to keep (finite and > 0); counts the NaN / +-Inf and the negative ones per pixel
    of the chunk into ``n_nonfinite`` / ``n_negative`` (from spectrum ``start``)."""
    keep = vals > 0
    finite = np.isfinite(vals)
    keep &= finite
    if not finite.all():
        n_nonfinite[start:start + m] += np.bincount(rows[~finite], minlength=m)
    negative = vals < 0
    if negative.any():
        n_negative[start:start + m] += np.bincount(rows[negative & finite], minlength=m)
    return keep


def _warn_bad_values(imzml: Path, n_nonfinite: np.ndarray, n_negative: np.ndarray, tic: np.ndarray) -> None:
    """One warning per kind of unusable intensity, with the counts, the first spectrum and the obs flag."""
    n = len(tic)
    for counts, what, done, flag in (
        (n_nonfinite, "NaN / Inf intensities", "those values were left out", "nonfinite_intensity"),
        (n_negative, "negative intensities", "those values were set to 0 (an intensity cannot be negative)",
         "negative_intensity"),
    ):
        hit = np.flatnonzero(counts)
        if not len(hit):
            continue
        empty = int(np.sum(tic[hit] <= 0))
        warnings.warn(
            f"{len(hit)} of {n} spectra in {imzml.name} hold {what} ({int(counts.sum())} values; first spectrum "
            f"index {int(hit[0])}); {done}" + (f", which leaves {empty} pixel(s) without signal" if empty else "")
            + f". The pixels are flagged in the MSI table's obs['{flag}']; check the export ({imzml})",
            UserWarning, stacklevel=3)


def _chunks(lengths: np.ndarray, chunk_size: int):
    """(start, stop) spectrum ranges with at most ``chunk_size`` spectra and ~MAX_VALUES_PER_CHUNK values."""
    start, n = 0, len(lengths)
    cum = np.concatenate([[0], np.cumsum(lengths)])
    while start < n:
        stop = min(n, start + chunk_size)
        if cum[stop] - cum[start] > MAX_VALUES_PER_CHUNK:
            stop = max(start + 1, int(np.searchsorted(cum, cum[start] + MAX_VALUES_PER_CHUNK, side="right")) - 1)
        yield start, stop
        start = stop


# ----------------------------------------------------------------------------------------------- reader
def iter_read_imzml(
    path: str | Path,
    *,
    sample: str,
    pixel_size_um: float,
    mz_range: Sequence[float] | None = None,
    bin_ppm: float = 20.0,
    normalize: str = "tic",
    chunk_size: int = 2000,
) -> ProgressGen:
    """Read an imzML/ibd pair onto the anchored ppm m/z grid, yielding progress per chunk of spectra.

    Parameters
    ----------
    path
        The ``.imzML`` file; its ``.ibd`` must lie next to it with the same name.
    sample
        Sample name; names the elements (``{sample}_msi``, ``{sample}_msi_tic``) and the coordinate system.
    pixel_size_um
        Raster step of the MSI acquisition in micrometres.
    mz_range
        ``(low, high)``: keep only peaks with ``low <= m/z <= high`` (default: all).
    bin_ppm
        Bin width in parts per million; bins are anchored at m/z 50 so every file shares bin identities.
    normalize
        ``"tic"`` (divide each pixel by its TIC and multiply by the median TIC), ``"rms"`` (same with the
        root-mean-square intensity) or ``"none"``.
    chunk_size
        Spectra read and binned at once (at most ~1 million raw values per chunk in any case).

    Yields
    ------
    Progress
        One event per chunk (``step`` = spectra done, ``total`` = spectra in the file).

    Returns
    -------
    SpatialData with table ``{sample}_msi`` (pixels x m/z bins; ``X`` = normalised intensities, float32 CSR
    when smaller than dense; obs ``x``, ``y`` (0-based), ``tic`` (raw), ``sample``, ``nonfinite_intensity`` /
    ``negative_intensity`` (the spectrum held NaN / Inf values, which are left out, or negative values, which
    count as 0; a warning gives the counts); obsm ``spatial`` in um of the MSI frame; var ``mz``, ``mz_bin``) and image ``{sample}_msi_tic`` (c=1, y, x; 0 where no spectrum) with
    ``Scale(pixel_size_um)`` into ``sample`` (the un-registered guess) and into ``{sample}_msi``.

    Raises
    ------
    ParameterError
        Invalid ``pixel_size_um``, ``bin_ppm``, ``mz_range``, ``normalize`` or ``chunk_size``.
    MissingImzMLFileError, ImzMLError
        Missing .imzML / .ibd, truncated .ibd, UUID mismatch, unreadable metadata, a pixel beyond the raster the
        header declares, or no peak in range.
    """
    import anndata as ad
    import scipy.sparse as sp
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, TableModel
    from spatialdata.transformations import Scale

    sample = str(sample)
    pixel_size_um, rng, bin_ppm = _check_params(pixel_size_um, mz_range, bin_ppm, normalize, chunk_size)
    imzml, ibd = _resolve_paths(path)
    stage = f"read imzML {sample}"
    yield Progress(stage, 0, None, f"parsing {imzml.name}")
    info = _ImzMLInfo(imzml, ibd)
    n = info.n
    yield Progress(stage, 0, n, f"{n} spectra ({info.mode})")

    index_dtype = np.int32 if bin_ppm >= 0.01 else np.int64  # bin ids of m/z up to 1e7 fit in int32
    indptr = np.zeros(n + 1, dtype=np.int64)
    tic = np.zeros(n, dtype=np.float64)
    sumsq = np.zeros(n, dtype=np.float64)
    n_nonfinite = np.zeros(n, dtype=np.int64)  # per pixel: NaN / +-Inf intensities (dropped)
    n_negative = np.zeros(n, dtype=np.int64)  # per pixel: negative intensities (set to 0)
    kmin, kmax = None, None
    mz_seen = [np.inf, -np.inf]

    def bins_of(mzs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ok = np.isfinite(mzs) & (mzs > 0)
        if rng is not None:
            ok &= (mzs >= rng[0]) & (mzs <= rng[1])
        k = np.zeros(len(mzs), dtype=np.int64)
        k[ok] = mz_bin_index(mzs[ok], bin_ppm)
        return k, ok

    with open(ibd, "rb") as fh:
        shared = None
        if info.mode == "continuous":
            mzs0 = _read_arrays(fh, [info.request("mz", 0, 1)])[0]
            mzs0 = mzs0.astype(np.float64)
            k0, ok0 = bins_of(mzs0)
            shared = (k0.astype(index_dtype), ok0, len(mzs0))
            if np.any(shared[1]):
                mz_seen = [float(mzs0[shared[1]].min()), float(mzs0[shared[1]].max())]
        # upper bound of the non-zeros: every raw value in its own bin (processed), or every bin of the shared
        # m/z axis in every pixel (continuous); capped at 2**28 entries (2 GiB of address space for both
        # buffers together), beyond which the buffers grow as needed
        if shared is not None and np.all(info.int_lengths == shared[2]):
            bound = n * len(np.unique(shared[0][shared[1]]))
        else:
            bound = int(info.int_lengths.sum())
        bound = min(bound, 1 << 28)
        data = _GrowingArray(np.float32, bound)
        kbuf = _GrowingArray(index_dtype, bound)
        for start, stop in _chunks(info.int_lengths, chunk_size):
            m = stop - start
            lens = info.int_lengths[start:stop]
            int_request = info.request("int", start, stop)
            rows = np.repeat(np.arange(m, dtype=np.int64), lens)
            if shared is not None and np.all(lens == shared[2]):
                vals = _read_arrays(fh, [int_request])[0]
                keep = _count_bad_values(vals, rows, m, start, n_nonfinite, n_negative)
                keep &= np.tile(shared[1], m)
                k = np.tile(shared[0], m)[keep]
            else:
                mzs, vals = _read_arrays(fh, [info.request("mz", start, stop), int_request])
                keep = _count_bad_values(vals, rows, m, start, n_nonfinite, n_negative)
                keep &= np.isfinite(mzs)
                keep &= mzs > 0
                if rng is not None:
                    keep &= mzs >= rng[0]
                    keep &= mzs <= rng[1]
                mzs = mzs[keep].astype(np.float64, copy=False)
                if len(mzs):
                    mz_seen = [min(mz_seen[0], float(mzs.min())), max(mz_seen[1], float(mzs.max()))]
                k = mz_bin_index(mzs, bin_ppm)
                del mzs
            rows = rows[keep]
            vals = vals[keep].astype(np.float64)
            del keep
            tic[start:stop] = np.bincount(rows, weights=vals, minlength=m)
            if len(k):
                sums, kk, counts = _sum_per_pixel_bin(rows, k, vals, m)
                del rows, k, vals
                kk = kk.astype(index_dtype)
                sumsq[start:stop] = np.bincount(np.repeat(np.arange(m), counts),
                                                weights=sums.astype(np.float64) ** 2, minlength=m)
                indptr[start + 1:stop + 1] = counts
                data.extend(sums)
                kbuf.extend(kk)
                if len(kk):
                    kmin = int(kk.min()) if kmin is None else min(kmin, int(kk.min()))
                    kmax = int(kk.max()) if kmax is None else max(kmax, int(kk.max()))
                del sums, kk
            yield Progress(stage, stop, n, f"{stop}/{n} spectra")

    _warn_bad_values(imzml, n_nonfinite, n_negative, tic)
    if kmin is None:
        where = f" within mz_range={list(rng)}" if rng else ""
        raise ImzMLError(f"No non-zero peak{where} in any of the {n} spectra", imzml,
                         fix="Check mz_range against the m/z range of the data" if rng else "The file holds no signal")
    np.cumsum(indptr, out=indptr)
    values = data.finish()
    kcol = kbuf.finish()
    # keep only bins that are non-zero in some pixel; remap bin ids -> column numbers in place, block-wise
    present = np.zeros(kmax - kmin + 1, dtype=bool)
    block = 1 << 16  # values per step: keeps the temporaries below ~1 MiB whatever the file size
    for a in range(0, len(kcol), block):
        present[kcol[a:a + block] - kmin] = True
    remap = (np.cumsum(present) - 1).astype(index_dtype)
    for a in range(0, len(kcol), block):
        kcol[a:a + block] = remap[kcol[a:a + block] - kmin]
    used = np.flatnonzero(present).astype(np.int64) + kmin
    del present, remap
    n_bins = len(used)
    if kcol.dtype != np.int32 and n_bins < 2**31 and len(kcol) < 2**31:
        kcol = kcol.astype(np.int32)
    if indptr[-1] < 2**31:
        indptr = indptr.astype(np.int32)
    X = sp.csr_matrix((values, kcol, indptr), shape=(n, n_bins), copy=False)
    X.has_sorted_indices = True
    del values, kcol

    # normalise in place, block of rows by block of rows (no nnz-sized temporaries)
    ref = 1.0
    if normalize == "none":
        factor = None
    else:
        per_pixel = tic if normalize == "tic" else np.sqrt(sumsq / n_bins)
        positive = per_pixel > 0
        ref = float(np.median(per_pixel[positive])) if positive.any() else 1.0
        factor = np.zeros(n, dtype=np.float64)
        factor[positive] = ref / per_pixel[positive]
        factor32 = factor.astype(np.float32)
        nnz = int(X.indptr[-1])
        for lo in range(0, nnz, block):  # bounded by values, not rows, so temporaries stay small
            hi = min(nnz, lo + block)
            rows = np.searchsorted(X.indptr, np.arange(lo, hi), side="right") - 1
            X.data[lo:hi] *= factor32[rows]
    dense_bytes = n * n_bins * 4
    sparse_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    if dense_bytes < sparse_bytes:
        X = X.toarray()

    mz = mz_bin_centre(used, bin_ppm)
    names = pd.Index([f"{v:.4f}" for v in mz])
    var = pd.DataFrame({"mz": mz, "mz_bin": used}, index=names)
    obs = pd.DataFrame(
        {
            "x": info.x.astype(np.int32),
            "y": info.y.astype(np.int32),
            "tic": tic,
            "sample": pd.Categorical([sample] * n),
            "nonfinite_intensity": n_nonfinite > 0,
            "negative_intensity": n_negative > 0,
        },
        index=pd.Index([f"{sample}_msi_{x}_{y}" for x, y in zip(info.x.tolist(), info.y.tolist())]),
    )
    spatial = np.column_stack([info.x, info.y]).astype(np.float64) * pixel_size_um
    mz_used = list(rng) if rng is not None else [float(mz_seen[0]), float(mz_seen[1])]
    uns_meta: dict[str, Any] = {
        "path": str(imzml.resolve()),
        "mode": info.mode,
        "bin_ppm": bin_ppm,
        "mz_anchor": MZ_ANCHOR,
        "mz_range": mz_used,
        "mz_range_given": rng is not None,
        "pixel_size_um": pixel_size_um,
        "n_pixels": int(n),
        "image_shape": [int(info.height), int(info.width)],
        "normalize": normalize,
        "median_reference": float(ref),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Variable names are not unique" is handled below
        adata = ad.AnnData(X=X, obs=obs, var=var, obsm={"spatial": spatial})
    if not adata.var_names.is_unique:
        warnings.warn(f"bin_ppm={bin_ppm} gives bins closer than 1e-4 m/z; var_names made unique "
                      "(use var['mz_bin'] to match bins across files)", stacklevel=2)
        adata.var_names_make_unique()
    adata.uns["spatialmix_msi"] = uns_meta
    table = TableModel.parse(adata)

    img = np.zeros((1, info.height, info.width), dtype=np.float32)
    img[0, info.y, info.x] = tic
    scale = Scale([pixel_size_um, pixel_size_um], axes=("y", "x"))
    tic_image = Image2DModel.parse(
        img, dims=("c", "y", "x"), c_coords=["tic"],
        transformations={sample: scale, f"{sample}_msi": Scale([pixel_size_um, pixel_size_um], axes=("y", "x"))},
    )
    meta = {k: uns_meta[k] for k in ("path", "mode", "pixel_size_um", "n_pixels", "image_shape", "bin_ppm",
                                     "mz_range", "normalize")}
    attrs = {"spatialmix": {"samples": {sample: {"msi": meta}}}}
    return SpatialData(images={f"{sample}_msi_tic": tic_image}, tables={f"{sample}_msi": table}, attrs=attrs)


def read_imzml(
    path: str | Path,
    *,
    sample: str,
    pixel_size_um: float,
    mz_range: Sequence[float] | None = None,
    bin_ppm: float = 20.0,
    normalize: str = "tic",
    chunk_size: int = 2000,
):
    """Read an imzML/ibd pair onto the anchored ppm m/z grid (see :func:`iter_read_imzml` for the details).

    Parameters
    ----------
    path, sample, pixel_size_um, mz_range, bin_ppm, normalize, chunk_size
        As in :func:`iter_read_imzml`.

    Returns
    -------
    SpatialData with table ``{sample}_msi`` and image ``{sample}_msi_tic``.
    """
    return run(iter_read_imzml(path, sample=sample, pixel_size_um=pixel_size_um, mz_range=mz_range,
                               bin_ppm=bin_ppm, normalize=normalize, chunk_size=chunk_size))
