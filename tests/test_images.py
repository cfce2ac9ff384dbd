"""``defr.images``: every PIL mode decoded correctly or refused by name; one resize path for every input type."""

from __future__ import annotations

import numpy as np
import pytest
import torch
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
