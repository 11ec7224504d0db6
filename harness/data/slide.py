"""Regions of an H&E image, read without decoding the rest of it.

TIFF in all its slide forms (tiled or stripped, BigTIFF, pyramidal and OME-TIFF, SVS, NDPI) is read with
tifffile through zarr: a region decodes only the tiles or strips it overlaps, so memory is bounded by the
patches in flight however large the slide (a 100k px slide holds 30 GB of RGB). An uncompressed TIFF is
memory-mapped instead. JPEG and PNG have no tiles to skip: PIL decodes them whole (JPEG stops at 65,535 px
a side; whole-slide scanners write TIFF).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stbench.errors import DataError

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["Slide", "open_slide", "is_tiff"]

_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF, both byte orders
_BLANK_CHECK_PX = 4096  # the blank check decodes a pyramid level only up to this side
WHITE = 255  # where a patch leaves the image: glass, not black


def is_tiff(path: Path) -> bool:
    """True for a TIFF by its first bytes (slides carry .svs, .ndpi, .btf, .scn, ... suffixes)."""
    try:
        with Path(path).open("rb") as fh:
            return fh.read(4) in _TIFF_MAGIC
    except OSError:
        return False


class Slide:
    """An RGB image of ``size`` (width, height) from which `region` reads boxes as uint8 arrays."""

    def __init__(self, path: Path, size: tuple[int, int]) -> None:
        self.path, self.size = Path(path), size

    def _read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The (y1 - y0, x1 - x0, 3) uint8 box, inside the image."""
        raise NotImplementedError

    def region(self, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        """``(height, width, 3)`` uint8 pixels from ``(x0, y0)``; white where the box leaves the image."""
        w, h = self.size
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + width, w), min(y0 + height, h)
        if (ix0, iy0, ix1, iy1) == (x0, y0, x0 + width, y0 + height):
            return self._read(x0, y0, x0 + width, y0 + height)
        out = np.full((height, width, 3), WHITE, dtype=np.uint8)
        if ix0 < ix1 and iy0 < iy1:
            out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = self._read(ix0, iy0, ix1, iy1)
        return out

    def close(self) -> None:
        pass

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PilSlide(Slide):
    """A JPEG or PNG, decoded whole once (`stbench.data.layout.open_image`)."""

    def __init__(self, path: Path, image: PILImage.Image) -> None:
        super().__init__(path, image.size)
        self.image = image

    def _read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return np.asarray(self.image.crop((x0, y0, x1, y1)), dtype=np.uint8)

    def close(self) -> None:
        self.image.close()


class TiffSlide(Slide):
    """The full-resolution level of a TIFF's first image series, read through zarr (or a memory map)."""

    def __init__(self, path: Path) -> None:
        import tifffile

        try:
            self._tif = tifffile.TiffFile(path)
        except (OSError, ValueError, tifffile.TiffFileError) as exc:  # a truncated or foreign file
            raise DataError(path, f"cannot read image as TIFF ({exc})") from exc
        try:
            self._open(path)
        except (ValueError, KeyError, NotImplementedError, tifffile.TiffFileError) as exc:  # a layout tifffile lacks
            self._tif.close()
            raise DataError(path, f"cannot read image as TIFF ({type(exc).__name__}: {exc})") from exc
        except BaseException:
            self._tif.close()
            raise

    def _open(self, path: Path) -> None:
        import tifffile
        import zarr

        series = self._tif.series[0]
        axes = series.axes.upper()
        if "S" not in axes and "C" in axes and series.shape[axes.index("C")] in (3, 4):
            axes = axes.replace("C", "S")  # planar RGB written as channels (OME-TIFF)
        if "Y" not in axes or "X" not in axes:
            raise DataError(path, f"TIFF image has axes {series.axes!r}, not an image (no Y and X)")
        if series.dtype not in (np.uint8, np.uint16):
            raise DataError(path, f"TIFF image holds {series.dtype} values; give an 8- or 16-bit RGB H&E")
        self._axes, self._levels = axes, series.levels
        level = series.levels[0]
        self._store = None
        if level.keyframe.is_memmappable:  # uncompressed and contiguous: map it, decode nothing
            self._array = tifffile.memmap(path, series=0, level=0, mode="r")
        else:  # tiles or strips decoded on demand; nothing is kept between reads
            self._store = self._tif.aszarr(series=0, level=0)
            self._array = zarr.open(self._store, mode="r")
        super().__init__(path, (int(level.shape[axes.index("X")]), int(level.shape[axes.index("Y")])))

    def _index(self, x0: int, y0: int, x1: int, y1: int) -> tuple:
        """The array index of a box: slices on Y and X, everything on S (samples), the first of other axes."""
        picks = {"Y": slice(y0, y1), "X": slice(x0, x1), "S": slice(None)}
        return tuple(picks.get(a, 0) for a in self._axes)

    def _rgb(self, block: np.ndarray) -> np.ndarray:
        """(h, w, 3) uint8 from the axes kept by `_index` (Y, X and maybe S, in file order)."""
        kept = [a for a in self._axes if a in "YXS"]
        block = np.transpose(block, [kept.index(a) for a in "YXS" if a in kept])
        if block.ndim == 2:
            block = block[:, :, None]
        if block.dtype == np.uint16:  # 16-bit scans: keep the high byte
            block = (block >> 8).astype(np.uint8)
        if block.shape[2] == 1:  # grey
            return np.repeat(block, 3, axis=2)
        return np.ascontiguousarray(block[:, :, :3])  # RGBA: alpha dropped, as PIL's convert("RGB")

    def _read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        try:
            return self._rgb(np.asarray(self._array[self._index(x0, y0, x1, y1)]))
        except (OSError, ValueError, RuntimeError, KeyError) as exc:  # a damaged tile, a codec imagecodecs lacks
            raise DataError(self.path, f"cannot decode the region x={x0}..{x1}, y={y0}..{y1} ({exc})") from exc

    def check_not_blank(self) -> None:
        """Refuse an image of one colour, judged on its smallest pyramid level when that is small enough to
        decode (a slide without a small level is judged by its patches: background and glass checks)."""
        level = self._levels[-1]
        shape = dict(zip(self._axes, level.shape))
        if max(shape["Y"], shape["X"]) > _BLANK_CHECK_PX:
            return
        try:
            small = level.asarray()
        except (OSError, ValueError, RuntimeError) as exc:
            raise DataError(self.path, f"cannot decode the image ({exc})") from exc
        if small.size and small.min() == small.max():
            raise DataError(self.path, "image is blank (one colour everywhere)")

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        self._tif.close()


def open_slide(path: Path) -> Slide:
    """A `TiffSlide` for any TIFF, else a `PilSlide` (the image decoded whole); a blank image is an error."""
    path = Path(path)
    if is_tiff(path):
        slide = TiffSlide(path)
        try:
            slide.check_not_blank()
        except Exception:
            slide.close()
            raise
        return slide
    from stbench.data.layout import open_image

    return PilSlide(path, open_image(path))
