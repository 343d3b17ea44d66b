"""Decoding policy on small real files written here (xnetmap.data.decode)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from xnetmap.data import MAX_PIXELS, UnreadableImage, decode_image


def _px(img, x, y):
    return img.getpixel((x, y))


def test_rgb_png_is_lossless(tmp_path):
    a = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    Image.fromarray(a).save(tmp_path / "a.png")
    img = decode_image(tmp_path / "a.png")
    assert img.mode == "RGB" and img.size == (5, 4)
    np.testing.assert_array_equal(np.asarray(img), a)


def test_jpeg_decodes_to_rgb(tmp_path):
    Image.new("RGB", (16, 8), (200, 30, 60)).save(tmp_path / "a.jpg", quality=95)
    img = decode_image(tmp_path / "a.jpg")
    assert img.mode == "RGB" and img.size == (16, 8)
    assert np.abs(np.asarray(img, dtype=int) - [200, 30, 60]).max() <= 3


def test_png_named_jpeg_is_sniffed(tmp_path):
    a = np.array([[[1, 2, 3], [250, 251, 252]]], dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "n01.JPEG", format="PNG")
    img = decode_image(tmp_path / "n01.JPEG")
    np.testing.assert_array_equal(np.asarray(img), a)  # lossless: it really was read as PNG


def test_greyscale_stays_single_channel(tmp_path):
    a = np.array([[0, 17], [128, 255]], dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "g.png")
    img = decode_image(tmp_path / "g.png")
    assert img.mode == "L"
    np.testing.assert_array_equal(np.asarray(img), a)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    # C=0, M=255, Y=0, K=0 is magenta: R = 255, G = 0, B = 255.
    Image.new("CMYK", (16, 16), (0, 255, 0, 0)).save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    img = decode_image(tmp_path / "c.jpg")
    assert img.mode == "RGB"
    assert np.abs(np.asarray(img, dtype=int) - [255, 0, 255]).max() <= 6


def test_palette_with_transparency_keeps_palette_colours(tmp_path):
    img = Image.new("P", (3, 1))
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.putdata([0, 1, 0])
    img.save(tmp_path / "p.png", transparency=0)
    assert "transparency" in Image.open(tmp_path / "p.png").info
    out = decode_image(tmp_path / "p.png")
    assert out.mode == "RGB"
    assert [_px(out, x, 0) for x in range(3)] == [(10, 20, 30), (200, 100, 50), (10, 20, 30)]


def test_16bit_png_maps_to_8bit(tmp_path):
    a = np.array([[0, 25700, 65535, 300, 128]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    img = decode_image(tmp_path / "d.png")
    assert img.mode == "L"
    # round(v / 257): 0, 100, 255, round(1.167) = 1, round(0.498) = 0
    np.testing.assert_array_equal(np.asarray(img), [[0, 100, 255, 1, 0]])


def test_rgba_drops_alpha(tmp_path):
    Image.new("RGBA", (2, 2), (9, 8, 7, 0)).save(tmp_path / "t.png")
    img = decode_image(tmp_path / "t.png")
    assert img.mode == "RGB" and _px(img, 0, 0) == (9, 8, 7)


def test_exif_orientation_is_applied(tmp_path):
    # Stored 32 wide x 16 high: left half red, right half blue. Orientation 6 means
    # "rotate 90 degrees clockwise to display": the viewer sees 16 x 32, red on top.
    a = np.zeros((16, 32, 3), dtype=np.uint8)
    a[:, :16] = (255, 0, 0)
    a[:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    img = decode_image(tmp_path / "r.jpg")
    assert img.size == (16, 32)
    top, bottom = np.asarray(img, dtype=int)[4, 8], np.asarray(img, dtype=int)[28, 8]
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_truncated_jpeg_is_unreadable(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "f.jpg")
    data = (tmp_path / "f.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImage) as info:
        decode_image(tmp_path / "t.jpg")
    assert "t.jpg" in str(info.value) and "truncated" in info.value.reason


def test_not_an_image_and_missing(tmp_path):
    (tmp_path / "x.jpg").write_text("hello, not an image")
    with pytest.raises(UnreadableImage) as info:
        decode_image(tmp_path / "x.jpg")
    assert info.value.path.endswith("x.jpg") and "not an image" in info.value.reason
    with pytest.raises(UnreadableImage, match="not found"):
        decode_image(tmp_path / "missing.png")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10_000, 20_000])  # over our limit; over Pillow's own (2x)
def test_decompression_bomb_refused_from_header(tmp_path, side):
    (tmp_path / "bomb.png").write_bytes(_png_header_only(side, side))
    assert side * side > MAX_PIXELS
    with pytest.raises(UnreadableImage) as info:
        decode_image(tmp_path / "bomb.png")
    assert "decompression-bomb limit" in info.value.reason and "bomb.png" in str(info.value)


def test_unreadable_image_is_plain_exception():
    err = UnreadableImage("a.jpg", "why")
    assert isinstance(err, Exception) and err.reason == "why" and str(err) == "a.jpg: why"
