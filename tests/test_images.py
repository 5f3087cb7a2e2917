"""Opening user images: every pixel mode to 8-bit RGB, EXIF orientation, first frame, size caps, corrupt files."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models.images import ImageInputError, check_size, open_image, to_rgb


def _png_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kwargs.pop("format", "PNG"), **kwargs)
    return buffer.getvalue()


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    image = Image.fromarray(ramp, mode="I;16")
    rgb = np.asarray(open_image(_png_bytes(image)))
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    np.testing.assert_allclose(rgb[..., 0], np.round(ramp / 65535 * 255), atol=1)
    assert rgb.min() == 0 and rgb.max() == 255 and 120 < rgb.mean() < 135  # PIL's convert would be mostly white


def test_alpha_palette_cmyk_grey_and_float_become_rgb():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)  # fully transparent -> white, not black
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    assert to_rgb(half).getpixel((0, 0))[0] in (127, 128)
    palette = Image.new("P", (4, 4), 3)
    palette.putpalette([0, 0, 0, 10, 20, 30, 40, 50, 60, 200, 100, 50] + [0] * 756)
    assert to_rgb(palette).getpixel((0, 0)) == (200, 100, 50)
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))
    assert to_rgb(cmyk).getpixel((0, 0)) == (255, 0, 0)
    assert to_rgb(Image.new("L", (4, 4), 77)).getpixel((0, 0)) == (77, 77, 77)
    floats = Image.fromarray(np.array([[0.0, 0.5], [1.0, 2.0]], dtype=np.float32), mode="F")
    assert [to_rgb(floats).getpixel(p)[0] for p in ((0, 0), (1, 1))] == [0, 255]
    assert open_image(_png_bytes(cmyk.convert("RGB"))).mode == "RGB"


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: displayed as 20 x 40
    data = _png_bytes(image, format="JPEG", exif=exif.tobytes())
    assert open_image(data).size == (20, 40)


def test_first_frame_of_an_animation():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert open_image(buffer.getvalue()).getpixel((0, 0))[0] > 200


def test_size_caps_and_corrupt_files(tmp_path):
    with pytest.raises(ImageInputError, match="decompression-bomb"):
        check_size(30_000, 30_000)
    with pytest.raises(ImageInputError, match="empty"):
        check_size(0, 5)
    bomb = tmp_path / "bomb.png"  # a real 30000 x 30000 PNG header: refused before any pixel is decoded
    Image.new("1", (30_000, 30_000)).save(bomb)
    assert bomb.stat().st_size < 2_000_000
    with pytest.raises(ImageInputError, match="decompression-bomb"):
        open_image(bomb)
    medium = tmp_path / "medium.png"  # below PIL's own guard, above ours
    Image.new("1", (8_000, 8_000)).save(medium)
    with pytest.raises(ImageInputError, match="8000x8000"):
        open_image(medium)
    with pytest.raises(ImageInputError, match="Cannot read"):
        open_image(b"this is not an image")
    truncated = _png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))[:60]
    with pytest.raises(ImageInputError, match="Cannot read"):
        open_image(truncated)
    with pytest.raises(ImageInputError, match="MB"):
        open_image(b"0" * 200, max_bytes=100)
    assert open_image(_png_bytes(Image.new("RGB", (1, 1)))).size == (1, 1)


# -- the app's check on upload (ui.inputs.check_upload): refused or warned as the file arrives, not on Analyse -----
def _upload(tmp_path, name: str, data: bytes) -> dict:
    path = tmp_path / name
    path.write_bytes(data)
    return {"path": str(path), "orig_name": name}   # what gr.Image sends a handler with preprocess=False


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header says width x height (the size check reads the header before any pixel)."""
    import struct
    import zlib
    data = bytearray(_png_bytes(Image.new("RGB", (1, 1))))
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


def test_upload_check_refuses_a_non_image_and_a_huge_image_and_clears_the_box(tmp_path):
    from ui.inputs import check_upload
    with pytest.warns(UserWarning, match="notes.txt was not loaded: Cannot read notes.txt as an image"):
        update, status = check_upload(_upload(tmp_path, "notes.txt", b"not an image at all"))
    assert update == {"__type__": "update", "value": None} and status.startswith("⚠️ notes.txt was not loaded")
    huge = _png_claiming(9000, 9000)
    with pytest.warns(UserWarning, match="huge.png was not loaded: .*too many pixels|huge.png was not loaded"):
        update, status = check_upload(_upload(tmp_path, "huge.png", huge))
    assert update["value"] is None and "9000" in status


def test_upload_check_warns_about_a_tiny_image_and_accepts_a_normal_one(tmp_path):
    from ui.inputs import check_upload
    with pytest.warns(UserWarning, match="dot.png is only 1x1 px"):
        update, status = check_upload(_upload(tmp_path, "dot.png", _png_bytes(Image.new("RGB", (1, 1)))))
    assert update == {"__type__": "update"} and "interpolated" in status   # kept, with the warning
    update, status = check_upload(_upload(tmp_path, "photo.png", _png_bytes(Image.new("RGB", (64, 48)))))
    assert update == {"__type__": "update"} and status == "Image **photo.png**: 64x48 px."
    assert check_upload(None) == ({"__type__": "update"}, {"__type__": "update"})
