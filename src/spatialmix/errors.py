"""Exceptions raised by napari-spatialmix.

Every error a user can cause with bad input is one of these. Messages say what is wrong, where (the file
or element), and what to do about it. All derive from :class:`SpatialMixError`, so callers (the napari
widgets, the CLI) can catch one class and show the message.
"""

from __future__ import annotations

from pathlib import Path


class SpatialMixError(Exception):
    """Base class of every error napari-spatialmix raises on purpose."""


def _where(path: str | Path | None) -> str:
    return f" ({path})" if path is not None else ""


class InputFileError(SpatialMixError, ValueError):
    """An input file is missing, unreadable, truncated, or not in the expected format."""

    def __init__(self, message: str, path: str | Path | None = None, fix: str | None = None):
        self.path = Path(path) if path is not None else None
        self.fix = fix
        text = f"{message}{_where(path)}"
        if fix:
            text += f". {fix}"
        super().__init__(text)


class MissingFileError(InputFileError, FileNotFoundError):
    """A file the reader needs does not exist."""


class ImzMLError(InputFileError):
    """An imzML/ibd pair cannot be read (missing or truncated .ibd, UUID mismatch, bad metadata)."""


class ImageFormatError(InputFileError):
    """An image is not an RGB image the histology reader can use."""


class VisiumFormatError(InputFileError):
    """A Space Ranger ``outs/`` folder is incomplete or inconsistent."""


class AnnotationError(InputFileError):
    """A pathologist annotation file does not match the spots it annotates."""


class ParameterError(SpatialMixError, ValueError):
    """A parameter value is invalid (e.g. a negative pixel size)."""


class RegistrationError(SpatialMixError, ValueError):
    """Registration cannot be computed (e.g. fewer than 3 landmarks, no tissue found)."""


class ProjectError(SpatialMixError, ValueError):
    """A SpatialData project does not follow napari-spatialmix's conventions."""


def check_positive(name: str, value, *, where: str | None = None) -> float:
    """Return ``value`` as float, or raise :class:`ParameterError` when it is not a positive number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a positive number, got {value!r}{_where(where)}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise ParameterError(
            f"{name} must be a positive number, got {value!r}{_where(where)}. "
            f"Give the physical size in micrometres (e.g. {name}=50 for a 50 um raster)"
        )
    return v


# --- added by spatialmix.io: "missing file" variants that are both the reader's error and FileNotFoundError,
# so callers can catch either ``ImzMLError`` (etc.) or ``MissingFileError`` / ``FileNotFoundError``.


class MissingVisiumFileError(VisiumFormatError, MissingFileError):
    """A Space Ranger folder, or a file it must contain, does not exist."""


class MissingImzMLFileError(ImzMLError, MissingFileError):
    """The .imzML file or its .ibd companion does not exist."""


class MissingImageFileError(ImageFormatError, MissingFileError):
    """An H&E image file does not exist."""


class MissingAnnotationFileError(AnnotationError, MissingFileError):
    """A pathologist annotation file does not exist."""


class EncoderError(InputFileError):
    """A user's image-encoder checkpoint cannot be loaded or returns unusable features."""


class TrainingError(SpatialMixError, RuntimeError):
    """Training cannot go on (a non-finite loss, a device that is not there, a checkpoint that does not fit)."""


class ModelError(SpatialMixError, ValueError):
    """A model cannot do what was asked (an output it does not produce, data that does not match it)."""


class FeatureMismatchError(ModelError):
    """A dataset's features or modalities differ from the ones a saved model was trained on."""


class ConfigError(InputFileError):
    """A run configuration (TOML) is invalid: names the key, what is wrong and what is allowed."""


class Interrupted(KeyboardInterrupt):
    """The work was stopped from outside: Ctrl-C (SIGINT) or a scheduler's ``SIGTERM``.

    A :class:`KeyboardInterrupt`, so that it passes every ``except Exception`` as Ctrl-C does and the same
    clean-up runs (the training engine writes the last completed epoch's checkpoint, a save removes its
    half-written copy). The CLI turns it into one line and the exit status ``128 + signal number``.
    """

    def __init__(self, signum: int = 2):
        import signal

        self.signum = int(signum)
        try:
            self.signal_name = signal.Signals(self.signum).name
        except ValueError:
            self.signal_name = f"signal {self.signum}"
        super().__init__(f"stopped by {self.signal_name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
