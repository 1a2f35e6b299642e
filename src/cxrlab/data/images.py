"""Decoding one image file into a single-channel uint8 array of a fixed size.

X-rays are grayscale, so one channel is stored; models get three equal channels at their
input. Whatever the file holds (8- or 16-bit, L, RGB, RGBA, CMYK, palette, EXIF-rotated,
DICOM), the result is ``(size, size)`` uint8 with bright bone.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cxrlab.core.text import first_line

IMAGE_EXTENSIONS = {".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
# Files that operating systems leave beside images; never data, never worth a warning.
IGNORED_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}


class ImageTooLarge(Exception):
    """A DICOM file over Pillow's decompression-bomb limit (Pillow guards the other formats)."""


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def decode_file(path: str, size: int) -> tuple[np.ndarray | None, str, str]:
    """Read and decode ``path``: returns ``(pixels or None, sha1 of the bytes, error reason)``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return None, "", f"cannot open ({exc.strerror or exc})"
    digest = hashlib.sha1(data).hexdigest()
    if not data:
        return None, digest, "the file is empty"
    try:
        if Path(path).suffix.lower() in {".dcm", ".dicom"} or data[128:132] == b"DICM":
            pixels = _decode_dicom(data, size)
        else:
            pixels = _decode_pil(data, size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, ImageTooLarge) as exc:
        return None, digest, f"image too large ({first_line(exc)})"
    except UnidentifiedImageError:
        return None, digest, "not an image in a known format (JPEG, PNG, BMP, TIFF or DICOM)"
    except ImportError as exc:
        return None, digest, str(exc)
    except Exception as exc:
        return None, digest, f"not a readable image ({first_line(exc)})"
    return pixels, digest, ""


def _decode_pil(data: bytes, size: int) -> np.ndarray:
    with warnings.catch_warnings():
        # Above MAX_IMAGE_PIXELS Pillow only warns; make it the error it is for this use.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image: Image.Image = Image.open(io.BytesIO(data))
        if image.format == "JPEG":
            # Decode at the smallest DCT scale that still covers the target: 2-8x faster
            # for the 1000-2900 px originals, and the resize below does the rest.
            image.draft("L", (size, size))
        image.load()
    image = ImageOps.exif_transpose(image)
    if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        # Deep images usually use 10-12 of their bits: stretch the range actually used.
        array = _stretch_to_uint8(np.asarray(image, dtype=np.float32))
        image = Image.fromarray(array)
    elif image.mode == "RGBA" or image.mode == "LA" or (image.mode == "P" and "transparency" in image.info):
        # Composite on black: transparent pixels are background, not content.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba).convert("L")
    elif image.mode != "L":
        image = image.convert("L")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def _decode_dicom(data: bytes, size: int) -> np.ndarray:
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("DICOM needs pydicom: pip install 'cxrlab[dicom]'") from exc
    with warnings.catch_warnings():
        # pydicom warns about each odd element; a file that does not decode is reported once, as a bad image.
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(io.BytesIO(data))
        # The same guard Pillow applies to other formats, checked before the pixels are unpacked.
        pixel_count = int(getattr(dataset, "Rows", 0) or 0) * int(getattr(dataset, "Columns", 0) or 0)
        if Image.MAX_IMAGE_PIXELS and pixel_count > Image.MAX_IMAGE_PIXELS:
            raise ImageTooLarge(f"{pixel_count} pixels, over the limit of {Image.MAX_IMAGE_PIXELS}")
        pixels = dataset.pixel_array.astype(np.float32)
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        pixels = pixels[..., :3].mean(axis=-1)
    elif pixels.ndim == 3:  # a multi-frame file: the first frame
        pixels = pixels[0]
    slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
    intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
    pixels = pixels * slope + intercept
    pixels = _stretch_to_uint8(pixels)
    if str(getattr(dataset, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        # MONOCHROME1 stores bone dark; invert so every source shows bone bright.
        pixels = 255 - pixels
    image = Image.fromarray(pixels)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def _stretch_to_uint8(pixels: np.ndarray) -> np.ndarray:
    low, high = float(pixels.min()), float(pixels.max())
    if high <= low:
        return np.zeros(pixels.shape, dtype=np.uint8)
    return np.round((pixels - low) * (255.0 / (high - low))).astype(np.uint8)


def resize_array(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize one 2-D uint8 (or wider) array to ``(size, size)`` uint8."""
    if pixels.dtype != np.uint8:
        pixels = _stretch_to_uint8(pixels.astype(np.float32))
    if pixels.shape == (size, size):
        return pixels
    image = Image.fromarray(pixels)
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0), dtype=np.uint8)
