"""Issue 15: hostile inputs. Each case builds a bad input in tmp_path, calls the public function (or the CLI)
and checks that the user is told what is wrong, where, and what to do (a ``spatialmix.errors`` exception), or
that the result is right and a warning gives the count."""

from __future__ import annotations

import re
import uuid
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from _fixtures import write_imzml

from spatialmix import errors
from spatialmix.io import read_imzml


def _dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X)


# ============================================================================================================
# imzML written by other software: inline settings (MALDIquantForeign), referenceable groups, dtypes, zlib
# ============================================================================================================
_DTYPE_CV = {np.dtype(np.float32): ("MS:1000521", "32-bit float"), np.dtype(np.float64): ("MS:1000523", "64-bit float"),
             np.dtype(np.int32): ("IMS:1000141", "32-bit integer"), np.dtype(np.int64): ("IMS:1000142", "64-bit integer")}


def _write_imzml_by_hand(path: Path, spectra, *, mz_dtype=np.float64, int_dtype=np.float32, compress=False,
                         groups=False, max_xy=None) -> Path:
    """An imzML 1.1 file written the way other software does: binary-array settings inline in every spectrum
    (``groups=False``, as R's MALDIquantForeign) or in referenceable param groups, optionally zlib-compressed,
    the pixel position directly in the spectrum (no scanList)."""
    uid = uuid.uuid4()
    ibd = bytearray(uid.bytes)

    def settings(dtype, kind) -> str:
        acc, name = _DTYPE_CV[np.dtype(dtype)]
        comp = ('<cvParam cvRef="MS" accession="MS:1000574" name="zlib compression" value=""/>' if compress else
                '<cvParam cvRef="MS" accession="MS:1000576" name="no compression" value=""/>')
        what = ('<cvParam cvRef="MS" accession="MS:1000514" name="m/z array" value=""/>' if kind == "mz" else
                '<cvParam cvRef="MS" accession="MS:1000515" name="intensity array" value=""/>')
        return f'<cvParam cvRef="MS" accession="{acc}" name="{name}" value=""/>{comp}{what}'

    body = []
    for i, (x, y, mzs, ints) in enumerate(spectra):
        arrays = []
        for kind, values, dtype in (("mz", mzs, mz_dtype), ("int", ints, int_dtype)):
            raw = np.asarray(values, dtype=dtype).tobytes()
            data = zlib.compress(raw) if compress else raw
            offset = len(ibd)
            ibd += data
            head = (f'<referenceableParamGroupRef ref="{kind}Array"/>' if groups else settings(dtype, kind))
            arrays.append(
                f'<binaryDataArray encodedLength="0">{head}'
                f'<cvParam cvRef="IMS" accession="IMS:1000102" name="external offset" value="{offset}"/>'
                f'<cvParam cvRef="IMS" accession="IMS:1000103" name="external array length" value="{len(values)}"/>'
                f'<cvParam cvRef="IMS" accession="IMS:1000104" name="external encoded length" value="{len(data)}"/>'
                "<binary/></binaryDataArray>")
        body.append(f'<spectrum index="{i}" id="S{i}" defaultArrayLength="{len(mzs)}">'
                    f'<cvParam cvRef="IMS" accession="IMS:1000050" name="position x" value="{x}"/>'
                    f'<cvParam cvRef="IMS" accession="IMS:1000051" name="position y" value="{y}"/>'
                    f'<binaryDataArrayList count="2">{"".join(arrays)}</binaryDataArrayList></spectrum>')
    group_list = ""
    if groups:
        group_list = ('<referenceableParamGroupList count="2">'
                      f'<referenceableParamGroup id="mzArray">{settings(mz_dtype, "mz")}</referenceableParamGroup>'
                      f'<referenceableParamGroup id="intArray">{settings(int_dtype, "int")}</referenceableParamGroup>'
                      "</referenceableParamGroupList>")
    scan = ""
    if max_xy is not None:
        scan = ('<scanSettingsList count="1"><scanSettings id="s1">'
                f'<cvParam cvRef="IMS" accession="IMS:1000042" name="max count of pixels x" value="{max_xy[0]}"/>'
                f'<cvParam cvRef="IMS" accession="IMS:1000043" name="max count of pixels y" value="{max_xy[1]}"/>'
                "</scanSettings></scanSettingsList>")
    xml = ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<mzML xmlns="http://psi.hupo.org/ms/mzml" version="1.1">'
           '<fileDescription><fileContent>'
           f'<cvParam cvRef="IMS" accession="IMS:1000080" name="universally unique identifier" value="{{{uid}}}"/>'
           '<cvParam cvRef="IMS" accession="IMS:1000031" name="processed" value=""/>'
           f'</fileContent></fileDescription>{group_list}{scan}<run id="r"><spectrumList count="{len(spectra)}">'
           f'{"".join(body)}</spectrumList></run></mzML>\n')
    path.write_text(xml, encoding="latin-1")
    path.with_suffix(".ibd").write_bytes(bytes(ibd))
    return path


def _ibd_arrays(imzml: Path) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """(x, y, m/z, intensities) of every spectrum, read straight from the .ibd at the offsets in the XML
    (MALDIquantForeign's files: 64-bit floats, uncompressed, settings inline)."""
    xml = imzml.read_text(encoding="latin-1")
    ibd = imzml.with_suffix(".ibd").read_bytes()
    out = []
    for spec in re.findall(r"<spectrum .*?</spectrum>", xml, flags=re.S):
        x = int(re.search(r'name="position x" value="(\d+)"', spec).group(1))
        y = int(re.search(r'name="position y" value="(\d+)"', spec).group(1))
        arrays = []
        for arr in re.findall(r"<binaryDataArray>.*?</binaryDataArray>", spec, flags=re.S):
            assert "64-bit float" in arr and "no compression" in arr
            off = int(re.search(r'name="external offset" value="(\d+)"', arr).group(1))
            n = int(re.search(r'name="external array length" value="(\d+)"', arr).group(1))
            arrays.append(("m/z array" in arr, np.frombuffer(ibd, dtype="<f8", count=n, offset=off)))
        mz = next(a for is_mz, a in arrays if is_mz)
        ints = next(a for is_mz, a in arrays if not is_mz)
        out.append((x, y, mz, ints))
    return out


@pytest.mark.parametrize("name, expected", [
    # MALDIquantForeign's own tests (test_importImzMl-functions.R): mass and intensity of both spectra
    ("tiny_continuous", [(1, 1, [1, 2, 3, 4, 5], [6, 7, 8, 9, 10]), (2, 1, [1, 2, 3, 4, 5], [10, 9, 8, 7, 6])]),
    ("tiny_processed", [(1, 1, [1, 2, 3, 4, 5], [6, 7, 8, 9, 10]), (2, 1, [6, 7, 8, 9, 10], [10, 9, 8, 7, 6])]),
])
def test_maldiquantforeign_imzml_reads(maldiquant_exampledata, name, expected):
    """R's MALDIquantForeign writes the binary-array settings inline (no referenceableParamGroupRef), on which
    pyimzML 1.5.5 fails with AttributeError; both example files must read with the values they hold."""
    path = maldiquant_exampledata / f"{name}.imzML"
    direct = _ibd_arrays(path)
    assert [(x, y, list(m), list(i)) for x, y, m, i in direct] == expected  # the R package's numbers
    sdata = read_imzml(path, sample="R", pixel_size_um=10.0, normalize="none", bin_ppm=20.0)
    t = sdata.tables["R_msi"]
    assert t.n_obs == 2 and list(t.obs["x"]) == [0, 1] and list(t.obs["y"]) == [0, 0]
    assert t.uns["spatialmix_msi"]["mode"] == name.split("_")[1]
    assert sdata.images["R_msi_tic"].shape == (1, 1, 2)
    X = _dense(t.X)
    for row, (_, _, mz, ints) in enumerate(direct):
        cols = [int(np.argmin(np.abs(t.var["mz"].to_numpy() - v))) for v in mz]
        np.testing.assert_allclose(t.var["mz"].to_numpy()[cols], mz, rtol=2e-5)  # the bin holding each m/z
        np.testing.assert_array_equal(X[row, cols], ints)
        assert X[row].sum() == pytest.approx(ints.sum()) == t.obs["tic"].iloc[row]


@pytest.mark.parametrize("groups", [False, True], ids=["inline", "groups"])
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "zlib"])
@pytest.mark.parametrize("mz_dtype, int_dtype", [(np.float64, np.float32), (np.float32, np.int32),
                                                 (np.float64, np.int64), (np.float32, np.float64)])
def test_imzml_written_any_way_reads(tmp_path, groups, compress, mz_dtype, int_dtype):
    spectra = [(1, 1, [100.0, 250.0, 700.0], [3, 5, 7]), (2, 1, [250.0, 900.0], [11, 2]),
               (1, 2, [100.0, 900.0], [1, 4])]
    path = _write_imzml_by_hand(tmp_path / "any.imzML", spectra, mz_dtype=mz_dtype, int_dtype=int_dtype,
                                compress=compress, groups=groups)
    t = read_imzml(path, sample="A", pixel_size_um=20.0, normalize="none").tables["A_msi"]
    assert t.shape == (3, 4)
    np.testing.assert_allclose(t.var["mz"], [100.0, 250.0, 700.0, 900.0], rtol=2e-5)
    np.testing.assert_array_equal(_dense(t.X), [[3, 5, 7, 0], [0, 11, 0, 2], [1, 0, 0, 4]])
    assert list(t.obs["x"]) == [0, 1, 0] and list(t.obs["y"]) == [0, 0, 1]


def test_imzml_corrupt_zlib_array_is_named(tmp_path):
    path = _write_imzml_by_hand(tmp_path / "z.imzML", [(1, 1, [100.0, 200.0], [1.0, 2.0])], compress=True)
    ibd = bytearray(path.with_suffix(".ibd").read_bytes())
    ibd[20:24] = b"\xff\xff\xff\xff"  # inside the first compressed array
    path.with_suffix(".ibd").write_bytes(bytes(ibd))
    with pytest.raises(errors.ImzMLError, match=r"byte 16 of the \.ibd cannot be read.*z\.ibd.*re-export"):
        read_imzml(path, sample="A", pixel_size_um=20.0)


# ============================================================================================================
# imzML: NaN / Inf / negative intensities, a pixel beyond the declared raster
# ============================================================================================================
def test_imzml_nonfinite_intensities_counted_and_flagged(tmp_path):
    nan, inf = float("nan"), float("inf")
    spectra = [(1, 1, [100.0, 200.0], [1.0, 2.0]), (2, 1, [100.0, 200.0], [nan, nan]),  # all NaN -> empty
               (1, 2, [100.0, 200.0], [inf, 5.0]), (2, 2, [100.0, 200.0], [-inf, 3.0])]
    path = write_imzml(tmp_path / "nan.imzML", spectra)
    with pytest.warns(UserWarning, match=r"3 of 4 spectra in nan\.imzML hold NaN / Inf intensities \(4 values; "
                      r"first spectrum index 1\).*1 pixel\(s\) without signal.*obs\['nonfinite_intensity'\]"):
        t = read_imzml(path, sample="A", pixel_size_um=20.0, normalize="none").tables["A_msi"]
    assert list(t.obs["nonfinite_intensity"]) == [False, True, True, True]
    np.testing.assert_array_equal(t.obs["tic"], [3.0, 0.0, 5.0, 3.0])
    np.testing.assert_array_equal(_dense(t.X), [[1, 2], [0, 0], [0, 5], [0, 3]])


def test_imzml_negative_intensities_counted_and_flagged(tmp_path):
    spectra = [(1, 1, [100.0, 200.0], [1.0, 2.0]), (2, 1, [100.0, 200.0], [-1.0, -4.0]),
               (1, 2, [100.0, 200.0], [-2.0, 6.0])]
    path = write_imzml(tmp_path / "neg.imzML", spectra)
    with pytest.warns(UserWarning, match=r"2 of 3 spectra in neg\.imzML hold negative intensities \(3 values; "
                      r"first spectrum index 1\); those values were set to 0.*1 pixel\(s\) without signal.*"
                      r"obs\['negative_intensity'\]"):
        t = read_imzml(path, sample="A", pixel_size_um=20.0).tables["A_msi"]
    assert list(t.obs["negative_intensity"]) == [False, True, True]
    assert (t.obs["tic"] >= 0).all() and list(t.obs["tic"]) == [3.0, 0.0, 6.0]
    X = _dense(t.X)
    assert (X >= 0).all() and X[1].sum() == 0 and X[2].sum() > 0


def test_imzml_clean_file_has_no_flags_and_no_warning(tmp_path):
    path = write_imzml(tmp_path / "ok.imzML", [(1, 1, [100.0], [1.0]), (2, 1, [100.0], [2.0])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = read_imzml(path, sample="A", pixel_size_um=20.0).tables["A_msi"]
    assert not t.obs["nonfinite_intensity"].any() and not t.obs["negative_intensity"].any()


@pytest.mark.parametrize("writer", ["pyimzml", "by_hand"])
def test_imzml_pixel_beyond_declared_raster_is_refused(tmp_path, writer):
    spectra = [(1, 1, [100.0], [1.0]), (2, 1, [100.0], [2.0]), (1, 2, [100.0], [3.0]), (2, 2, [100.0], [4.0])]
    if writer == "pyimzml":
        path = write_imzml(tmp_path / "far.imzML", spectra)
        xml = path.read_text()
        # corrupt the x coordinate of the third spectrum (index 2): 1 -> 950, header still says 2 x 2
        positions = [m.start() for m in re.finditer(r'name="position x" value="1"', xml)]
        at = positions[1]
        xml = xml[:at] + xml[at:].replace('name="position x" value="1"', 'name="position x" value="950"', 1)
        path.write_text(xml)
    else:
        spectra[2] = (950, 2, [100.0], [3.0])
        path = _write_imzml_by_hand(tmp_path / "far.imzML", spectra, max_xy=(2, 2))
    with pytest.raises(errors.ImzMLError, match=r"Spectrum 2 lies at x=950, beyond the declared raster \('max count "
                       r"of pixels x' = 2\).*far\.imzML.*re-export"):
        read_imzml(path, sample="A", pixel_size_um=20.0)


# ============================================================================================================
# samples.csv, run configuration and command line: checked whole before any reading
# ============================================================================================================
def _dataset(tmp_path: Path, rows: list[str], *, header: str = "sample,visium,imzml,msi_pixel_size_um") -> Path:
    """A dataset folder whose first sample's Visium folder is empty: any reading would fail on it first, so an
    error about a later row proves that the whole csv was checked before reading started."""
    data = tmp_path / "data"
    (data / "S1" / "outs").mkdir(parents=True)
    (data / "S2" / "outs").mkdir(parents=True)
    for s in ("S1", "S2"):
        write_imzml(data / s / f"{s}.imzML", [(1, 1, [100.0], [1.0])])
    (data / "samples.csv").write_text("\n".join([header, *rows]) + "\n")
    return data


SAMPLES_CSV_CASES = {
    "unit in pixel size": (["S1,S1/outs,S1/S1.imzML,50", "S2,S2/outs,S2/S2.imzML,50um"], errors.InputFileError,
                           r"samples\.csv line 3, column msi_pixel_size_um \(sample S2\): '50um' is not a number.*"
                           r"Write a plain number without unit"),
    "zero pixel size": (["S1,S1/outs,S1/S1.imzML,50", "S2,S2/outs,S2/S2.imzML,0"], errors.InputFileError,
                        r"samples\.csv line 3, column msi_pixel_size_um \(sample S2\): must be a positive number, "
                        r"got '0'.*e\.g\. 50"),
    "nan pixel size": (["S1,S1/outs,S1/S1.imzML,nan", "S2,S2/outs,S2/S2.imzML,50"], errors.InputFileError,
                       r"line 2, column msi_pixel_size_um \(sample S1\): must be a positive number, got 'nan'"),
    "missing relative path": (["S1,S1/outs,S1/S1.imzML,50", "S2,S2/outs,S2/nope.imzML,50"], errors.MissingFileError,
                              r"samples\.csv line 3, column imzml \(sample S2\): not found: .*nope\.imzML.*relative "
                              r"to its folder"),
    "missing visium folder": (["S1,S1/outs,,", "S2,S3/outs,,"], errors.MissingFileError,
                              r"line 3, column visium \(sample S2\): not found"),
    "visium is a file": (["S1,S1/outs,,", "S2,S2/S2.imzML,,"], errors.InputFileError,
                         r"line 3, column visium \(sample S2\): .*S2\.imzML must be a folder"),
    "imzml without ibd": (["S1,S1/outs,S1/S1.imzML,50", "S2,S2/outs,S2/S2.imzML,50"], errors.MissingFileError,
                          r"line 3, column imzml \(sample S2\): S2\.imzML has no \.ibd companion"),
    "imzml without size": (["S1,S1/outs,S1/S1.imzML,50", "S2,S2/outs,S2/S2.imzML,"], errors.ParameterError,
                           r"sample S2: an imzML file is given but no msi_pixel_size_um \(samples\.csv line 3, column "
                           r"msi_pixel_size_um \(sample S2\) is empty"),
}


@pytest.mark.parametrize("case", list(SAMPLES_CSV_CASES))
def test_samples_csv_checked_whole_before_reading(tmp_path, case):
    import time

    from spatialmix.pipeline import iter_prepare

    rows, cls, pattern = SAMPLES_CSV_CASES[case]
    data = _dataset(tmp_path, rows)
    if case == "imzml without ibd":
        (data / "S2" / "S2.ibd").unlink()
    t = time.perf_counter()
    with pytest.raises(cls, match=pattern):
        next(iter_prepare(data))  # the first step: nothing is read before the whole csv is checked
    assert time.perf_counter() - t < 1.0


@pytest.mark.parametrize("case", ["unit in pixel size", "zero pixel size", "missing relative path"])
def test_cli_prepare_reports_samples_csv_mistakes_before_reading(tmp_path, capsys, case):
    from spatialmix.cli import main

    rows, _, pattern = SAMPLES_CSV_CASES[case]
    data = _dataset(tmp_path, rows)
    assert main(["--quiet", "prepare", str(data), "--out", str(tmp_path / "p.zarr")]) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err, flags=re.S), err
    assert "Traceback" not in err and not (tmp_path / "p.zarr").exists()


def test_run_config_names_the_samples_csv_line(tmp_path):
    from spatialmix.config import load_config

    rows, _, _ = SAMPLES_CSV_CASES["unit in pixel size"]
    data = _dataset(tmp_path, rows)
    (tmp_path / "run.toml").write_text('[data]\nsamples_csv = "data/samples.csv"\n')
    with pytest.raises(errors.ConfigError, match=r"run\.toml line 2: \[data\] samples_csv cannot be read: samples\.csv "
                       r"line 3, column msi_pixel_size_um \(sample S2\): '50um' is not a number"):
        load_config(tmp_path / "run.toml")


@pytest.mark.parametrize("argv, pattern", [
    (["demo", "--epochs", "-1"], r"argument --epochs: must be a whole number >= 1 or 'auto', got '-1'"),  # was so
    (["demo", "--epochs", "ten"], r"argument --epochs: must be a whole number >= 1 or 'auto', got 'ten'"),
    (["demo", "--max-steps", "0"], r"argument --max-steps: must be a whole number >= 1, got '0'"),
    (["demo", "--lr", "-0.001"], r"argument --lr: must be a positive number, got '-0.001'"),
    (["demo", "--seed", "-3"], r"argument --seed: must be a whole number >= 0, got '-3'"),
    (["demo", "--device", "gpu"], r"argument --device: must be auto, cpu, cuda or cuda:N"),
    (["prepare", "DATA", "--out", "OUT", "--bin-ppm", "0"], r"argument --bin-ppm: must be a positive number, got '0'"),
    (["benchmark", "--data", "DATA", "--out", "OUT", "--cv-folds", "1"],
     r"argument --cv-folds: must be a whole number >= 2, got '1'"),
])
def test_cli_options_checked_before_any_work(tmp_path, capsys, argv, pattern):
    from spatialmix.cli import main

    argv = [str(tmp_path / a) if a in ("DATA", "OUT") else a for a in argv]
    with pytest.raises(SystemExit) as info:
        main(["--quiet", *argv])
    assert info.value.code == 2
    assert re.search(pattern, capsys.readouterr().err)


def test_prepare_checks_bin_ppm_before_reading(tmp_path):
    from spatialmix.pipeline import iter_prepare

    data = _dataset(tmp_path, ["S1,S1/outs,S1/S1.imzML,50"])
    with pytest.raises(errors.ParameterError, match="bin_ppm must be a positive number"):
        next(iter_prepare(data, bin_ppm=-5))


def test_single_pixel_imzml_refused_before_registration(tmp_path):
    from _fixtures import write_spaceranger

    from spatialmix.pipeline import SampleSpec, iter_prepare
    from spatialmix.progress import run

    write_spaceranger(tmp_path / "S1" / "outs")
    imzml = write_imzml(tmp_path / "S1" / "one.imzML", [(1, 1, [100.0, 200.0], [1.0, 2.0])])
    spec = SampleSpec("S1", tmp_path / "S1" / "outs", imzml=imzml, msi_pixel_size_um=50.0)
    with pytest.raises(errors.RegistrationError, match=r"sample S1: the MSI raster of .*one\.imzML is 1 x 1 pixels "
                       r"with 1 pixel\(s\) of signal.*--no-register"):
        run(iter_prepare([spec], morphology=False))


# ============================================================================================================
# Visium: spot positions that do not belong to the count matrix
# ============================================================================================================
def _spaceranger(tmp_path: Path, edit=None) -> Path:
    """A Space Ranger outs/ folder (6 x 8 spots, rows 0-1 out of tissue, 32 spots in the matrix) whose
    tissue_positions.csv is passed through ``edit(table) -> table``."""
    import pandas as pd
    from _fixtures import write_spaceranger

    outs = tmp_path / "outs"
    write_spaceranger(outs)
    if edit is not None:
        csv = outs / "spatial" / "tissue_positions.csv"
        edit(pd.read_csv(csv)).to_csv(csv, index=False)
    return outs


def _flip_in_tissue(fraction: float):
    def edit(table):
        inside = table.index[table["in_tissue"] == 1]
        table.loc[inside[: round(len(inside) * fraction)], "in_tissue"] = 0
        return table
    return edit


def _shift_rows(px: float):
    def edit(table):
        table["pxl_row_in_fullres"] += px
        return table
    return edit


VISIUM_CASES = {
    "every in_tissue 0": (lambda t: t.assign(in_tissue=0),
                          r"Every one of the 48 spots has in_tissue = 0.*tissue_positions\.csv.*in_tissue = 1"),
    "most matrix spots out of tissue": (_flip_in_tissue(0.75), r"24 of 32 spots of the count matrix \(75%\) are marked "
                                        r"out of tissue \(in_tissue = 0\) according to tissue_positions\.csv.*different "
                                        r"samples or Space Ranger runs"),
    "positions 950 px off": (_shift_rows(950.0), r"of 32 spots of the count matrix \(\d+%\) lie outside the "
                             r"tissue_hires_image\.png image"),
}


@pytest.mark.parametrize("case", list(VISIUM_CASES))
def test_visium_positions_of_another_sample_refused(tmp_path, case):
    from spatialmix.io import read_visium

    edit, pattern = VISIUM_CASES[case]
    with pytest.raises(errors.VisiumFormatError, match=pattern):
        read_visium(_spaceranger(tmp_path, edit), sample="A")


def test_visium_a_few_spots_out_of_tissue_warned(tmp_path):
    from spatialmix.io import read_visium

    outs = _spaceranger(tmp_path, _flip_in_tissue(0.125))
    with pytest.warns(UserWarning, match=r"4 of 32 spots of the count matrix \(12%\) are marked out of tissue "
                      r"\(in_tissue = 0\) according to tissue_positions\.csv.*tissue_positions\.csv"):
        sdata = read_visium(outs, sample="A")
    assert sdata.tables["rna"].n_obs == 32


def test_visium_positions_swapped_between_samples_refused(tmp_path, sample_data_dir):
    """The issue's case: P1_S1's matrix with P1_S2's tissue_positions.csv (204 of 342 spots out of tissue)."""
    import shutil

    from spatialmix.io import read_visium

    outs = tmp_path / "outs"
    shutil.copytree(sample_data_dir / "P1_S1" / "outs", outs)
    shutil.copy(sample_data_dir / "P1_S2" / "outs" / "spatial" / "tissue_positions.csv", outs / "spatial")
    with pytest.raises(errors.VisiumFormatError, match=r"204 of 342 spots of the count matrix \(60%\) are marked out "
                       r"of tissue"):
        read_visium(outs, sample="P1_S1")


# ============================================================================================================
# H&E: 12-bit data in 16-bit samples
# ============================================================================================================
@pytest.mark.parametrize("tag", [False, True], ids=["data-max", "MaxSampleValue"])
def test_he_12_bit_data_in_16_bit_tiff_scaled_by_its_range(tmp_path, tag):
    import tifffile

    from spatialmix.io import read_histology

    rng = np.random.default_rng(0)
    rgb8 = rng.integers(0, 256, size=(3, 40, 50)).astype(np.uint8)
    rgb8[:, 0, 0] = 255
    twelve = np.round(rgb8.astype(np.float64) * 4095 / 255).astype(np.uint16)  # 0..4095 in 16-bit samples
    path = tmp_path / "he12.tif"
    extratags = [(281, "H", 1, 4095, True)] if tag else []  # MaxSampleValue
    if tag:
        twelve[:, 0, 0] = 4000  # the data's maximum is below the tag's: the tag decides the range
    tifffile.imwrite(path, twelve, photometric="rgb", planarconfig="separate", extratags=extratags)
    with pytest.warns(UserWarning, match=r"he12\.tif stores 16-bit pixels but .*scaled 0-4095 to 0-255.*he12\.tif"):
        sdata = read_histology(path, sample="A", microns_per_pixel=1.0)
    he = sdata.images["A_he"].values
    expected = rgb8.copy()
    if tag:
        expected[:, 0, 0] = round(4000 * 255 / 4095)
    np.testing.assert_array_equal(he, expected)  # not values 0-16
    assert sdata.attrs["spatialmix"]["samples"]["A"]["he"]["source_max"] == 4095


def test_he_full_16_bit_range_no_warning(tmp_path):
    import tifffile

    from spatialmix.io import read_histology

    rgb = np.zeros((3, 20, 20), np.uint16)
    rgb[0] = 65535
    tifffile.imwrite(tmp_path / "he16.tif", rgb, photometric="rgb", planarconfig="separate")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", message="zarr")
        he = read_histology(tmp_path / "he16.tif", sample="A", microns_per_pixel=1.0).images["A_he"].values
    assert he[0].min() == 255 and he[1].max() == 0


# ============================================================================================================
# Annotations: a file without labels never erases the existing ones
# ============================================================================================================
@pytest.mark.parametrize("content, pattern", [
    ("Barcode,Pathologist\n", r"lists no spots \(only its header line\).*empty\.csv.*Export the annotation again"),
    ("Barcode,Pathologist\n{b0},\n{b1},\n", r"annotation for sample 'A' holds no label \(2 rows, all empty\); nothing "
     r"was written and the 32 existing 'pathologist' labels of the sample are kept.*empty\.csv"),
])
def test_annotation_without_labels_keeps_existing_labels(tmp_path, content, pattern):
    from spatialmix.io import add_annotations, read_visium

    sdata = read_visium(_spaceranger(tmp_path), sample="A")
    obs = sdata.tables["rna"].obs
    before = pd_categorical(["Tumour"] * 16 + ["Stroma"] * (len(obs) - 16))
    obs["pathologist"] = before
    csv = tmp_path / "empty.csv"
    csv.write_text(content.format(b0=obs["barcode"].iloc[0], b1=obs["barcode"].iloc[1]))
    with pytest.raises(errors.AnnotationError, match=pattern):
        add_annotations(sdata, "A", csv)
    assert list(sdata.tables["rna"].obs["pathologist"]) == list(before)


def pd_categorical(values):
    import pandas as pd

    return pd.Categorical(values)


# ============================================================================================================
# Model data: an all-zero modality, NaN in a modality table -> refused before training
# ============================================================================================================
def _project(msi: np.ndarray, morphology: np.ndarray | None = None):
    """A two-sample project with the spot tables ``rna``, ``msi`` (and ``morphology``) as prepare() builds them."""
    import anndata as ad
    import pandas as pd
    from spatialdata import SpatialData

    n = msi.shape[0]
    rng = np.random.default_rng(0)
    obs = pd.DataFrame({"sample": pd.Categorical(["S1"] * (n // 2) + ["S2"] * (n - n // 2)),
                        "region": pd.Categorical(["S1_spots"] * (n // 2) + ["S2_spots"] * (n - n // 2)),
                        "spot_id": np.arange(n)}, index=[f"spot{i}" for i in range(n)])
    obs["batch"] = obs["sample"]
    counts = sp.csr_matrix(rng.poisson(2.0, size=(n, 6)).astype(np.float32))
    tables = {"rna": ad.AnnData(X=counts.copy(), obs=obs.copy(), var=pd.DataFrame(index=[f"G{i}" for i in range(6)]),
                                layers={"counts": counts})}
    tables["msi"] = ad.AnnData(X=sp.csr_matrix(msi), obs=obs.assign(msi_covered=True),
                               var=pd.DataFrame(index=[f"{500 + i:.4f}" for i in range(msi.shape[1])]))
    if morphology is not None:
        tables["morphology"] = ad.AnnData(X=morphology, obs=obs.assign(he_covered=True),
                                          var=pd.DataFrame(index=[f"feat{i}" for i in range(morphology.shape[1])]))
    return SpatialData(tables=tables)


def test_all_zero_modality_refused_before_training():
    from spatialmix.data import MultiModalData

    sdata = _project(np.zeros((20, 4), np.float32))
    with pytest.raises(errors.ProjectError, match=r"table 'msi' of the project holds only zeros \(20 x 4\).*remove "
                       r"the modality"):
        MultiModalData.from_spatialdata(sdata, annotation_key=None)
    # leaving the modality out works
    assert MultiModalData.from_spatialdata(sdata, modalities=["rna"], annotation_key=None).modalities == ["rna"]


@pytest.mark.parametrize("table", ["msi", "morphology"])
def test_nan_in_modality_table_named_before_training(table):
    from spatialmix.data import MultiModalData

    rng = np.random.default_rng(1)
    msi = rng.random((20, 4)).astype(np.float32)
    morph = rng.normal(size=(20, 3)).astype(np.float32)
    if table == "msi":
        msi[3, 2] = np.nan
        column = "502.0000"
    else:
        morph[5, 1] = np.inf
        column = "feat1"
    sdata = _project(msi, morph)
    with pytest.raises(errors.ProjectError, match=rf"table '{table}' of the project has 1 NaN / Inf value\(s\), first "
                       rf"in column '{column}'.*fill them"):
        MultiModalData.from_spatialdata(sdata, annotation_key=None)


# ============================================================================================================
# Annotation prediction with a single class
# ============================================================================================================
@pytest.mark.parametrize("exclude, extra", [((), ""), (("Stroma",), r" \('Stroma' excluded\).*exclude=\(\)")])
def test_single_class_cross_validation_says_two_classes_are_needed(exclude, extra):
    from spatialmix.evaluate.annotations import cross_validate

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    labels = np.array(["Tumour"] * 36 + (["Stroma"] * 4 if exclude else ["Tumour"] * 4), dtype=object)
    samples = np.repeat(["S1", "S2"], 20)
    with pytest.raises(errors.ParameterError, match=r"cross-validation needs at least two annotation classes to tell "
                       rf"apart, but only 'Tumour' is labelled{extra}"):
        cross_validate(X, labels, samples, exclude=exclude)


def test_single_class_transfer_says_two_classes_are_needed():
    from spatialmix.evaluate.annotations import transfer

    X = np.random.default_rng(0).normal(size=(40, 3))
    labels = np.array(["Tumour"] * 40, dtype=object)
    with pytest.raises(errors.ParameterError, match=r"training on the source samples \['S1'\] needs at least two "
                       r"annotation classes"):
        transfer(X, labels, np.repeat(["S1", "S2"], 20), source_samples=["S1"], exclude=())


@pytest.mark.parametrize("value, pattern", [
    ('"50um"', r"run\.toml line 6: \[\[samples\]\] #1 \(S1\) msi_pixel_size_um must be a positive number, got \"50um\""),
    ("0", r"run\.toml line 6: \[\[samples\]\] #1 \(S1\) msi_pixel_size_um must be a positive number, got 0"),
])
def test_run_config_samples_table_sizes_named(tmp_path, value, pattern):
    """Already handled before issue 15 for [[samples]] tables in the TOML (the samples.csv path was not)."""
    from spatialmix.config import load_config

    data = _dataset(tmp_path, ["S1,S1/outs,S1/S1.imzML,50"])
    (tmp_path / "run.toml").write_text(f'[[samples]]\nname = "S1"\nvisium = "{data}/S1/outs"\n'
                                       f'imzml = "{data}/S1/S1.imzML"\n\nmsi_pixel_size_um = {value}\n')
    with pytest.raises(errors.ConfigError, match=pattern):
        load_config(tmp_path / "run.toml")
