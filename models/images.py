"""Opening any image a user may hand over, safely: size caps before decoding, EXIF orientation, first frame of
animations, and every pixel mode (palette, alpha, CMYK, greyscale, 16-bit, float) turned into 8-bit RGB.

PIL's own ``convert("RGB")`` clips 16-bit and 32-bit greyscale to white and drops transparency onto black; these
helpers scale high-bit-depth images to their real range and composite transparency over white.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 50_000_000          # width x height; a 7000 x 7000 photo passes, a decompression bomb does not
MAX_FILE_BYTES = 50 * 2**20


class ImageInputError(ValueError):
    """An image that cannot or must not be decoded; the message says why and what to do."""


def check_size(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """ImageInputError for an empty image or one with more than ``max_pixels`` pixels (checked before decoding)."""
    if width < 1 or height < 1:
        raise ImageInputError(f"The image is empty ({width}x{height} pixels).")
    if width * height > max_pixels:
        raise ImageInputError(
            f"The image is {width}x{height} = {width * height:,} pixels, more than the {max_pixels:,} allowed "
            "(a decompression-bomb guard). Resize it first.")


def _scaled_to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit ("I;16*", "I") and float ("F") greyscale as 8-bit "L", scaled by the format's range, not clipped."""
    array = np.asarray(image)
    if image.mode == "F":
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    else:
        top = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        scaled = array.astype(np.float64) / top
    return Image.fromarray((np.clip(np.nan_to_num(scaled), 0, 1) * 255).round().astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB view of any PIL image: alpha composited over white, high bit depths scaled, CMYK converted."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _scaled_to_8_bit(image).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_image(source: str | os.PathLike | bytes | Image.Image, max_pixels: int = MAX_PIXELS,
               max_bytes: int = MAX_FILE_BYTES) -> Image.Image:
    """A decoded 8-bit RGB image from a path, bytes or PIL image, upright (EXIF orientation applied), first frame.

    Raises ImageInputError for a file that is too large, too many pixels, empty, or not an image.
    """
    if isinstance(source, Image.Image):
        check_size(*source.size, max_pixels=max_pixels)
        return to_rgb(ImageOps.exif_transpose(source) or source)
    if isinstance(source, (bytes, bytearray)):
        if len(source) > max_bytes:
            raise ImageInputError(f"The file is {len(source) / 2**20:.1f} MB; at most {max_bytes / 2**20:.0f} MB.")
        handle, name = io.BytesIO(source), "the upload"
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageInputError(f"{path} is not a file.")
        if path.stat().st_size > max_bytes:
            raise ImageInputError(f"{path.name} is {path.stat().st_size / 2**20:.1f} MB; at most "
                                  f"{max_bytes / 2**20:.0f} MB.")
        handle, name = path, path.name
    try:
        with Image.open(handle) as image:
            check_size(*image.size, max_pixels=max_pixels)  # from the header, before any pixel is decoded
            image.seek(0)
            image.load()
            upright = ImageOps.exif_transpose(image) or image
            return to_rgb(upright).copy()
    except ImageInputError:
        raise
    except Image.DecompressionBombError as exc:  # PIL's own guard, at twice its MAX_IMAGE_PIXELS
        raise ImageInputError(f"{name} has too many pixels (a decompression-bomb guard): {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(f"Cannot read {name} as an image ({type(exc).__name__}: {exc}). "
                              "Use a PNG, JPEG, WebP, GIF, BMP or TIFF file.") from None
