"""PreprocessSpec: presets against hand-computed numbers, geometry, JSON, model metadata."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from xnetmap.data import PRESETS, PreprocessSpec, open_dataset, preprocess_sample
from xnetmap.errors import InputError, UsageError
from xnetmap.graph import model_preprocess


def _model(shape, meta=None, path=None):
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)
    g = helper.make_graph([helper.make_node("Identity", ["image"], ["out"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    for k, v in (meta or {}).items():
        m.metadata_props.add(key=k, value=v)
    if path is not None:
        onnx.save(m, path)
    return m


def test_imagenet_preset_hand_computed():
    img = Image.new("RGB", (320, 240), (255, 0, 128))
    x = PRESETS["imagenet"].apply(img)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    # (255/255 - 0.485)/0.229, (0 - 0.456)/0.224, (128/255 - 0.406)/0.225
    expected = [2.2489082969, -2.0357142857, 0.4264923747]
    for c in range(3):
        np.testing.assert_allclose(x[c], expected[c], rtol=0, atol=1e-5)


def test_imagenet_geometry_like_torchvision():
    spec = PRESETS["imagenet"]
    # 500 x 375: shorter side 375 -> 256, longer int(256 * 500 / 375) = 341;
    # crop top round((256 - 224) / 2) = 16, left round((341 - 224) / 2) = round(58.5) = 58.
    assert spec.geometry(500, 375) == ((341, 256), (58, 16, 282, 240))
    assert spec.geometry(375, 500) == ((256, 341), (16, 58, 240, 282))
    assert spec.geometry(256, 256) == (None, (16, 16, 240, 240))


def test_inception_preset_scales_to_minus_one_one():
    spec = PRESETS["inception"]
    assert spec.size == (299, 299) and spec.resize == 342  # 299 / 0.875 = 341.7
    x = spec.apply(Image.new("RGB", (400, 300), (0, 51, 255)))
    assert x.shape == (3, 299, 299)
    # v / 127.5 - 1: 0 -> -1, 51 -> -0.6, 255 -> 1
    for c, v in enumerate([-1.0, -0.6, 1.0]):
        np.testing.assert_allclose(x[c], v, atol=1e-6)
    # 400 x 300 -> (int(342 * 400 / 300), 342) = (456, 342); left round(78.5) = 78,
    # top round(21.5) = 22 (Python and torchvision round half to even)
    assert spec.geometry(400, 300) == ((456, 342), (78, 22, 377, 321))


def test_caffe_preset_bgr_mean_subtracted():
    x = PRESETS["caffe"].apply(Image.new("RGB", (300, 200), (10, 20, 30)))
    assert x.shape == (3, 224, 224)
    # BGR order, 0..255, minus [103.939, 116.779, 123.68]
    for c, v in enumerate([30 - 103.939, 20 - 116.779, 10 - 123.68]):
        np.testing.assert_allclose(x[c], v, atol=1e-4)


def test_center_crop_content_and_padding():
    a = np.arange(16, dtype=np.uint8).reshape(4, 4)
    spec = PreprocessSpec(size=(2, 2), resize=None, crop="center", interpolation="nearest",
                          colour="L", scale=1.0, mean=[0.0], std=[1.0])
    np.testing.assert_array_equal(spec.apply(Image.fromarray(a)), [[[5, 6], [9, 10]]])
    small = np.array([[7, 8], [9, 10]], dtype=np.uint8)
    big = spec.replace(size=(4, 4), mean=[1.0], std=[2.0])
    out = big.apply(Image.fromarray(small))[0]
    # Zero padding around the image, then (x - 1) / 2: padding -> -0.5, 7 -> 3, 10 -> 4.5
    assert out[0, 0] == -0.5 and out[1, 1] == 3.0 and out[2, 2] == 4.5 and out[3, 3] == -0.5


def test_fashion_mnist_spec_and_nhwc_layout():
    a = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    spec = PreprocessSpec(size=(2, 2), colour="L", scale=1 / 255, mean=[0.2860], std=[0.3530])
    x = spec.apply(Image.fromarray(a))
    # (v / 255 - 0.286) / 0.353
    np.testing.assert_allclose(x[0], [[-0.8101983, 2.0226629], [-0.2436261, 0.3229462]],
                               atol=1e-6)
    rgb = PreprocessSpec(size=(1, 2), layout="NHWC", scale=1.0, mean=[1, 2, 3], std=[1, 1, 2])
    y = rgb.apply(Image.fromarray(np.array([[[10, 20, 30], [40, 50, 60]]], dtype=np.uint8)))
    assert y.shape == (1, 2, 3)
    np.testing.assert_allclose(y[0], [[9, 18, 13.5], [39, 48, 28.5]])


def test_colour_conversions():
    red = Image.new("RGB", (1, 1), (255, 0, 0))
    spec_l = PreprocessSpec(size=(1, 1), colour="L", scale=1.0, mean=[0], std=[1])
    assert spec_l.apply(red)[0, 0, 0] == 76  # 255 * 299 / 1000 = 76.2 (ITU-R 601-2 luma)
    grey = Image.new("L", (1, 1), 9)
    spec_rgb = PreprocessSpec(size=(1, 1), scale=1.0, mean=[0], std=[1])
    assert spec_rgb.apply(grey).reshape(-1).tolist() == [9, 9, 9]


def test_json_round_trip_and_digest():
    for spec in PRESETS.values():
        back = PreprocessSpec.from_json(spec.to_json())
        assert back == spec and back.digest() == spec.digest()
    assert PRESETS["imagenet"].digest() != PRESETS["caffe"].digest()
    obj = PRESETS["imagenet"].to_dict()
    assert obj["version"] == 1 and obj["size"] == [224, 224] and obj["resize"] == 256
    with pytest.raises(InputError, match="version"):
        PreprocessSpec.from_json('{"version": 2, "size": [2, 2]}')
    with pytest.raises(InputError, match="unknown fields"):
        PreprocessSpec.from_json('{"version": 1, "size": [2, 2], "sise": 3}')
    with pytest.raises(InputError, match="colour"):
        PreprocessSpec.from_json('{"size": [2, 2], "colour": "CMYK"}')
    with pytest.raises(InputError, match="mean has 2 values"):
        PreprocessSpec.from_json('{"size": [2, 2], "mean": [1, 2]}')
    with pytest.raises(InputError, match="not valid JSON"):
        PreprocessSpec.from_json("{")


def test_from_model_metadata_round_trip(tmp_path):
    spec = PRESETS["caffe"]
    _model(["N", 3, 224, 224], {"xnetmap.preprocess": spec.to_json()}, tmp_path / "m.onnx")
    got, notes = model_preprocess(tmp_path / "m.onnx")
    assert got == spec and notes == []
    over, _ = model_preprocess(tmp_path / "m.onnx", overrides={"channel_order": "RGB"})
    assert over.channel_order == "RGB" and over.mean == spec.mean


def test_from_model_refuses_a_spec_that_cannot_feed_the_model(tmp_path):
    path = tmp_path / "m.onnx"
    _model(["N", 1, 28, 28], {"xnetmap.preprocess": PRESETS["caffe"].to_json()}, path)
    clash = r"m.onnx: .*\[3, 224, 224\].*'image' is \['N', 1, 28, 28\]"
    with pytest.raises(UsageError, match=clash):
        model_preprocess(path)
    ok, _ = model_preprocess(path, overrides={"colour": "L", "size": (28, 28),
                                                       "mean": (0.5,), "std": (0.5,)})
    assert ok.colour == "L" and ok.size == (28, 28)
    with pytest.raises(UsageError, match="NHWC samples"):
        PreprocessSpec.from_model(_model(["N", 3, 8, 8]), overrides={"layout": "NHWC"},
                                  name="m8")
    _model(["N", 3, 8, 8], {"xnetmap.preprocess": "{"}, tmp_path / "g.onnx")
    with pytest.raises(InputError, match=r"g.onnx: xnetmap.preprocess is not valid JSON"):
        model_preprocess(tmp_path / "g.onnx")


def test_from_model_infers_from_input_shape():
    spec, notes = PreprocessSpec.from_model(_model(["N", 1, 28, 28]))
    assert (spec.size, spec.layout, spec.colour, spec.resize) == ((28, 28), "NCHW", "L", None)
    assert notes and "assumed" in notes[0]
    spec, notes = PreprocessSpec.from_model(_model(["N", 32, 48, 3]))
    assert (spec.size, spec.layout, spec.colour) == ((32, 48), "NHWC", "RGB")
    with pytest.raises(InputError, match="no fixed height/width"):
        PreprocessSpec.from_model(_model(["N", 3, "H", "W"]))
    spec, _ = PreprocessSpec.from_model(_model(["N", 3, "H", "W"]), overrides={"size": (9, 8)})
    assert spec.size == (9, 8) and spec.colour == "RGB"
    spec, _ = PreprocessSpec.from_model(_model(["N", 3, "H", "W"]), preset="imagenet")
    assert spec == PRESETS["imagenet"]


def test_from_model_preset_adapts_to_model_shape():
    spec, notes = PreprocessSpec.from_model(_model(["N", 299, 299, 3]), preset="imagenet")
    assert spec.layout == "NHWC" and spec.size == (299, 299)
    assert spec.resize == round(299 * 256 / 224) and len(notes) == 2
    with pytest.raises(UsageError, match="unknown preset"):
        PreprocessSpec.from_model(_model(["N", 3, 8, 8]), preset="vgg")


def test_preprocess_sample_on_dataset(tmp_path):
    x = np.full((2, 3, 3), 51, dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    ds = open_dataset(tmp_path / "x.npy")
    spec = PreprocessSpec(size=(3, 3), colour="L", mean=[0.1], std=[0.5])
    np.testing.assert_allclose(preprocess_sample(ds, 1, spec), 0.2, atol=1e-6)  # (0.2-0.1)/0.5


@pytest.mark.parametrize("name", ["imagenet", "inception", "caffe"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_apply_matches_plain_formula_on_random_pixels(name, layout):
    rng = np.random.default_rng(3)
    spec = PRESETS[name].replace(size=(5, 7), resize=None, crop="none", layout=layout)
    u = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = spec.apply(Image.fromarray(u))
    v = u[:, :, ::-1] if spec.channel_order == "BGR" else u
    want = (v.astype(np.float64) * spec.scale - np.array(spec.mean)) / np.array(spec.std)
    if layout == "NCHW":
        want = want.transpose(2, 0, 1)
    assert x.shape == want.shape and x.flags.c_contiguous
    np.testing.assert_allclose(x, want, rtol=1e-6, atol=1e-5)
