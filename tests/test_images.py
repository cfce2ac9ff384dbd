"""``defr.images``: every PIL mode decoded correctly or refused by name; one resize path for every input type."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from imagekit import bomb_png
from PIL import Image

from defr.images import ImageInputError, resize_normalise, rgb_tensor, to_rgb
from defr.runtime.io import InputFileError, read_image

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _gradient(h: int = 20, w: int = 30) -> np.ndarray:
    """[h, w] float in [0, 1]: a horizontal ramp."""
    return np.tile(np.linspace(0.0, 1.0, w), (h, 1))


def test_sixteen_bit_grey_keeps_its_values(tmp_path):
    ramp = _gradient()
    sixteen = np.round(ramp * 65535).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(sixteen).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # PIL opens 16-bit PNGs as I;16 or I
    rgb = np.asarray(read_image(path), dtype=np.float64) / 255
    assert rgb.shape == (20, 30, 3)
    assert np.abs(rgb[..., 0] - ramp).max() <= 1 / 255  # not 99 % white
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_mode_i_out_of_range_and_mode_f_are_refused():
    with pytest.raises(ImageInputError, match="frame: mode I values in .* are not 16-bit"):
        to_rgb(Image.fromarray(np.full((4, 4), 70000, dtype=np.int32), mode="I"), "frame")
    with pytest.raises(ImageInputError, match="frame: mode F .* no defined value range"):
        to_rgb(Image.fromarray(_gradient().astype(np.float32), mode="F"), "frame")


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # transparent red
    assert np.asarray(to_rgb(rgba)).tolist() == np.full((4, 4, 3), 255).tolist()
    la = Image.new("LA", (4, 4), (0, 128))  # half-transparent black
    assert np.asarray(to_rgb(la))[0, 0].tolist() == [127, 127, 127]
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.info["transparency"] = 1  # the colour at index 1 is fully transparent
    assert np.asarray(to_rgb(palette))[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("mode", ["1", "L", "P", "CMYK", "YCbCr", "RGB"])
def test_common_modes_convert(mode):
    image = Image.new("RGB", (6, 5), (200, 100, 50)).convert(mode)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (6, 5)


def test_unreadable_and_refused_files_are_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(InputFileError, match="broken.jpg"):
        read_image(bad)
    f_image = tmp_path / "float.tif"
    Image.fromarray(_gradient().astype(np.float32), mode="F").save(f_image)
    with pytest.raises(InputFileError, match="float.tif: mode F"):
        read_image(f_image)


def test_pil_numpy_and_tensors_give_the_same_model_input():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    inputs = [
        Image.fromarray(array),
        array,
        torch.from_numpy(array).permute(2, 0, 1),
        torch.from_numpy(array).permute(2, 0, 1) / 255,
    ]
    out = [resize_normalise([rgb_tensor(x)], 32, MEAN, STD) for x in inputs]
    for o in out[1:]:
        assert (o - out[0]).abs().max() <= 1e-5


def test_batched_resize_equals_one_at_a_time():
    rng = np.random.default_rng(1)
    frames = [
        torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)) for h, w in [(20, 30), (40, 10), (20, 30)]
    ]
    batch = resize_normalise(frames, 16, MEAN, STD)
    single = torch.cat([resize_normalise([f], 16, MEAN, STD) for f in frames])
    assert batch.shape == (3, 3, 16, 16) and torch.equal(batch, single)
    stacked = resize_normalise(torch.stack([frames[0], frames[2]]), 16, MEAN, STD)
    assert torch.equal(stacked, batch[[0, 2]])
    assert resize_normalise([], 16, MEAN, STD).shape == (0, 3, 16, 16)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((10, 10), dtype=np.uint8), "H×W×3 uint8"),
        (np.zeros((10, 10, 3), dtype=np.float32), "H×W×3 uint8"),
        (torch.rand(4, 8, 8), r"\[3, H, W\]"),
        (torch.rand(3, 8, 8) * 2, r"\[0, 1\]"),
        (torch.full((3, 8, 8), float("nan")), "finite"),
        (torch.zeros(3, 0, 5, dtype=torch.uint8), "empty"),
        (torch.zeros(3, 4, 4, dtype=torch.int32), "uint8 or float"),
        ("x.jpg", "expected a PIL image"),
    ],
)
def test_bad_inputs_are_named(image, match):
    with pytest.raises(ImageInputError, match=f"frame 7: .*{match}"):
        rgb_tensor(image, "frame 7")


# --------------------------------------------------------------------------- the one decoder (issue 18: 4, 12, 13)


def _odd_files(folder) -> list:
    """One file each of the modes entry points used to decode differently (16-bit grey, RGBA, palette
    with transparency)."""
    folder.mkdir(parents=True, exist_ok=True)
    sixteen = np.round(_gradient() * 65535).astype(np.uint16)
    Image.fromarray(sixteen).save(folder / "a_grey16.png")
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, np.tile(np.linspace(0, 255, 30).astype(np.uint8), (20, 1))
    Image.fromarray(rgba, mode="RGBA").save(folder / "b_rgba.png")
    palette = Image.new("P", (30, 20), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.save(folder / "c_palette.png", transparency=1)
    return sorted(folder.iterdir())


def test_every_file_reader_decodes_through_the_one_decoder(tmp_path):
    from defr.data.hico import load_image
    from defr.export.calibration import _image_size
    from defr.images import decode_image

    for path in _odd_files(tmp_path / "odd"):
        reference = np.asarray(decode_image(path))
        assert reference.shape == (20, 30, 3) and reference.dtype == np.uint8
        assert np.array_equal(np.asarray(read_image(path)), reference), path.name
        assert np.array_equal(np.asarray(load_image(path)), reference), path.name
        assert np.array_equal(np.asarray(decode_image(path.read_bytes())), reference), path.name
        assert _image_size(path) == (30, 20)
    grey = np.asarray(decode_image(tmp_path / "odd" / "a_grey16.png"), dtype=np.float64)
    assert abs(grey.mean() - 255 * _gradient().mean()) < 1  # not all white (a plain convert("RGB"))


def _oriented_jpeg(path, orientation: int) -> np.ndarray:
    """A 4-row × 8-column JPEG, left half black, right half white, tagged with EXIF ``orientation``;
    returns the stored pixels (grey)."""
    stored = np.zeros((4, 8), dtype=np.uint8)
    stored[:, 4:] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).convert("RGB").save(path, exif=exif, quality=100)
    return stored


def test_exif_orientation_is_applied_by_every_reader(tmp_path):
    from defr.data.hico import load_image
    from defr.images import decode_image

    path = tmp_path / "phone.jpg"
    _oriented_jpeg(path, 6)  # 6: the viewer turns the stored picture 90° clockwise
    upright = decode_image(path)
    assert upright.size == (4, 8)  # (width, height): turned
    grey = np.asarray(upright)[..., 0].astype(int)
    assert grey[:3].mean() < 40 and grey[-3:].mean() > 215  # the stored left (black) half is now on top
    assert np.array_equal(np.asarray(read_image(path)), np.asarray(upright))
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(upright))
    with Image.open(path) as im:  # a PIL image handed to the API follows the same rule
        assert torch.equal(rgb_tensor(im), torch.from_numpy(np.asarray(upright).copy()).permute(2, 0, 1))
    _oriented_jpeg(tmp_path / "plain.jpg", 1)
    assert decode_image(tmp_path / "plain.jpg").size == (8, 4)


def test_decompression_bomb_is_one_error_naming_the_file(tmp_path):
    from defr.images import decode_image

    bomb = tmp_path / "bomb.png"
    bomb_png(bomb)
    with pytest.raises(ImageInputError, match=r"bomb\.png: refused as a decompression bomb"):
        decode_image(bomb)
    with pytest.raises(InputFileError, match=r"bomb\.png: refused as a decompression bomb"):
        read_image(bomb)


def test_decompression_bomb_in_calibration_data_names_the_file(tmp_path):
    from defr.export.calibration import CalibrationError, load_calibration_set
    from defr.model import create_model
    from defr.runtime.contract import RuntimeMeta

    folder = tmp_path / "cal"
    folder.mkdir()
    Image.new("RGB", (32, 32), (10, 20, 30)).save(folder / "a.png")
    bomb_png(folder / "b.png")
    meta = RuntimeMeta.from_model(create_model("tiny-vit", 64))
    with pytest.raises(CalibrationError, match=r"b\.png: refused as a decompression bomb"):
        load_calibration_set(folder, 1, meta, tmp_path / "work")


def test_detect_command_reports_a_bomb_in_one_line(tmp_path, tiny_model):
    from click.testing import CliRunner

    from defr.cli import main
    from defr.model import save_checkpoint

    checkpoint = tmp_path / "model.safetensors"
    save_checkpoint(tiny_model, checkpoint)
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32)).save(images / "a.png")
    bomb_png(images / "b.png")
    dets = tmp_path / "dets.jsonl"
    empty = '{"boxes": [], "labels": [], "scores": []'
    dets.write_text("".join(f'{empty}, "filename": "{n}"}}\n' for n in ("a.png", "b.png")))
    args = ["detect", "--checkpoint", str(checkpoint), "--images", str(images), "--detections", str(dets)]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "out.json")])
    assert result.exit_code == 1, result.output
    assert "b.png: refused as a decompression bomb" in result.output
    assert result.exc_info[0] is SystemExit and "Traceback" not in result.output
    assert not (tmp_path / "out.json").exists()


def test_a_closed_pil_image_is_refused_by_name():
    image = Image.new("RGB", (4, 4))
    image.close()
    with pytest.raises(ImageInputError, match="frame 3: the PIL image is closed"):
        rgb_tensor(image, "frame 3")


def test_decode_image_limits_formats_and_pixels():
    import io

    from defr.images import decode_image

    png, gif = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (30, 20), (1, 2, 3)).save(png, "PNG")
    Image.new("RGB", (30, 20)).save(gif, "GIF")
    assert decode_image(png.getvalue(), "req.image", formats=("PNG", "JPEG"), max_pixels=600).size == (30, 20)
    with pytest.raises(ImageInputError, match=r"req\.image: 30×20 pixels, more than the 599 allowed"):
        decode_image(png.getvalue(), "req.image", max_pixels=599)
    with pytest.raises(ImageInputError, match=r"req\.image: not a PNG or JPEG image"):
        decode_image(gif.getvalue(), "req.image", formats=("PNG", "JPEG"))
    with pytest.raises(ImageInputError, match=r"image bytes: cannot read image \(not an image file PIL can read\)"):
        decode_image(b"hello")


def test_a_header_past_pils_limit_is_refused_by_the_callers_pixel_limit(tmp_path):
    """Round-5 probe: a 100,000² PNG header sent to ``defr serve`` was refused with PIL's advice to raise
    ``Image.MAX_IMAGE_PIXELS``, which a client cannot do; with a pixel limit, the limit is named."""
    from defr.images import decode_image

    bomb_png(tmp_path / "b.png", 100000, 100000)
    data = (tmp_path / "b.png").read_bytes()
    with pytest.raises(
        ImageInputError, match=r"^f\.image: 10000000000 pixels, more than the 64 allowed \(max_pixels\)$"
    ):
        decode_image(data, "f.image", formats=("PNG", "JPEG"), max_pixels=64)
    with pytest.raises(ImageInputError, match="refused as a decompression bomb"):  # no limit of the caller's
        decode_image(data, "f.image")
