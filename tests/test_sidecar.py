"""``model.json`` as the typed ``Sidecar``: round trip, and every malformed field refused on read with one
line naming the file and the field (never a raw KeyError / TypeError, nor a value that reaches ONNX Runtime)."""

from __future__ import annotations

import copy
import dataclasses
import json
import re

import pytest

from defr.export.sidecar import model_sidecar
from defr.runtime.provenance import Int8Info
from defr.runtime.sidecar import (
    SIDECAR_FORMAT,
    Digest,
    EngineInfo,
    FileEntry,
    Sidecar,
    SidecarError,
    read_sidecar,
)

SHA = "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def sidecar(request) -> Sidecar:
    from defr.model import create_model

    model = create_model("tiny-vit", 64)
    files = {
        "model.onnx": FileEntry("fp32", Digest(10, SHA), {"weights.bin": Digest(4, SHA)}),
        "model.fp16.engine": FileEntry("fp16", Digest(10, SHA)),
    }
    profile = {
        "images": ((1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64)),
        "boxes_h": ((1, 4), (8, 4), (100, 4)),
        "boxes_o": ((1, 4), (8, 4), (100, 4)),
        "pair_index": ((1,), (8,), (100,)),
    }
    engine = EngineInfo("model.fp16.engine", profile, "qdp-aot", None)
    source = {"checkpoint": "tiny.safetensors", "sha256": SHA}
    int8 = Int8Info(
        "nncf",
        {"method": "static", "smooth_quant_alpha": 0.95, "accuracy_control": {"reverted": ["/stem/Conv"]}},
        calibration={"source": "synthetic", "images": 8},
        held_out={"source": "synthetic", "images": 8},
        gate={"passed": True, "runtime": "openvino"},
    )
    return model_sidecar(
        model, files, opset=18, plugin=False, mask_mode="released", source=source, engine=engine, int8=int8
    )


def test_round_trip(sidecar):
    d = sidecar.to_dict()
    assert d["format"] == SIDECAR_FORMAT and "score_rule" not in d
    back = Sidecar.from_dict(json.loads(json.dumps(d)))
    assert back == sidecar
    assert (back.engine.max_batch, back.engine.max_pairs, back.graph.mask_mode) == (4, 100, "released")
    assert back.files["model.onnx"].external_data == {"weights.bin": Digest(4, SHA)}
    assert (back.source.checkpoint, back.source.sha256, d["source"]) == (
        "tiny.safetensors",
        SHA,
        {"checkpoint": "tiny.safetensors", "sha256": SHA},
    )
    assert dict(back.exporter.versions) == d["exporter"] and "torch" in d["exporter"]
    assert (back.int8.quantizer, back.int8.gate["passed"], back.int8.settings["smooth_quant_alpha"]) == (
        "nncf",
        True,
        0.95,
    )
    assert d["int8"]["smooth_quant_alpha"] == 0.95  # the file keeps one flat int8 object
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.source.sha256 = "0" * 64  # records, not dicts: nothing edits them after validation


def test_int8_record_without_quantizer_is_onnx_runtimes(sidecar):
    """Format 2 exports had only ONNX Runtime's quantizer and did not name it; no gate: --no-verify."""
    d = sidecar.to_dict()
    d["format"] = "defr-export/2"
    d["int8"] = {"method": "static", "calibration": None, "held_out": {"images": 4}}
    back = Sidecar.from_dict(d)
    assert (back.int8.quantizer, back.int8.settings, back.int8.gate) == ("ort", {"method": "static"}, None)


def test_format_1_files_are_read(sidecar):
    """Exports written before the typed record: format 1, a score_rule block, no mask mode (hard)."""
    d = sidecar.to_dict()
    d["format"] = "defr-export/1"
    d["score_rule"] = {"score": "sigmoid(logit) * prior", "prior_exponent": 2.8}
    del d["graph"]["mask_mode"]
    back = Sidecar.from_dict(d)
    assert back.graph.mask_mode == "hard" and back.meta == sidecar.meta


def _set(d: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for key in parents:
        d = d[key]
    if value is _DELETE:
        del d[last]
    else:
        d[last] = value


_DELETE = object()

# (field path, bad value, the words the one-line error must contain)
CASES = [
    ("files", _DELETE, "files is missing"),
    ("files", ["model.onnx"], "files must be a JSON object, not a list"),
    ("files", {}, "files lists no file"),
    ("files.model.onnx", {"precision": "fp32", "bytes": 10}, "files['model.onnx'].sha256 is missing"),
    ("files.model.onnx", {"precision": "fp32", "bytes": 10, "sha256": "abc"}, "64 lowercase hex"),
    ("files.model.onnx", {"precision": "fp8", "bytes": 10, "sha256": SHA}, "precision must be one of"),
    ("input", _DELETE, "input is missing"),
    ("input.image_size", "64", "input.image_size must be an integer, not a string '64'"),
    ("input.image_size", -5, "input.image_size must be >= 1, not -5"),
    ("input.image_size", 64.0, "input.image_size must be an integer"),
    ("input.image_size", True, "input.image_size must be an integer"),
    ("input.image_size", 60, "not a multiple of input.patch_size 16"),
    ("input.mean", [0.5, 0.5], "input.mean must be a list of 3 numbers (R, G, B), not 2 values"),
    ("input.mean", [0.5, "a", 0.5], "input.mean[1] must be a finite number"),
    ("input.std", [0.26, 0.0, 0.27], "input.std[1] is 0.0: a standard deviation must be > 0"),
    ("input.std", [0.26, -1, 0.27], "input.std[1] is -1.0"),
    ("class_objects", [0] * 599 + [80], "class_objects[599] must be a HICO object index in 0..79, not 80"),
    ("class_objects", [0] * 599 + [-1], "class_objects[599]"),
    ("class_objects", [0] * 3, "one HICO object per class (600), not 3 entries"),
    ("classes", "ride bicycle", "classes must be a non-empty list"),
    ("graph.mask_mode", "soft", "graph.mask_mode must be one of ['hard', 'released'], not 'soft'"),
    ("graph.plugin", "no", "graph.plugin must be true or false"),
    ("graph.inputs", {"images": ["B", 3, 32, 32]}, "graph.inputs must be"),
    ("head", _DELETE, "head is missing"),
    ("head.logit_scale", "big", "head.logit_scale must be a finite number"),
    ("engine.file", "other.engine", "engine.file 'other.engine' is not listed in files"),
    ("engine.profile", {"images": [[1, 3, 64, 64]]}, "engine.profile must give (min, opt, max) shapes"),
    ("engine.plugin", "jit", "engine.plugin must be one of ['qdp-aot', 'library'], not 'jit'"),
    ("int8", [], "int8 must be a JSON object or null"),
    ("int8.quantizer", "trt", "int8.quantizer must be one of ['ort', 'nncf'], not 'trt'"),
    ("int8.gate", [], "int8.gate must be a JSON object or null, not a list"),
    ("int8.held_out", "8 images", "int8.held_out must be a JSON object or null"),
    ("exporter", [], "exporter must be a JSON object, not a list"),
    ("exporter.torch", 2.4, "exporter.torch must be a string, not a number 2.4"),
    ("source", "tiny", "source must be a JSON object, not a string 'tiny'"),
    ("source.sha256", 7, "source.sha256 must be a string"),
    ("source.init", [], "source.init must be a JSON object"),
    ("surprise", 1, "key(s) ['surprise'] are not part of format defr-export/3"),
]


@pytest.mark.parametrize(("field", "value", "message"), CASES, ids=[c[0] + ":" + repr(c[1])[:20] for c in CASES])
def test_malformed_fields_are_named(sidecar, tmp_path, field, value, message):
    d = copy.deepcopy(sidecar.to_dict())
    if field.startswith("files.model.onnx"):
        d["files"]["model.onnx"] = value
    else:
        _set(d, field, value)
    (tmp_path / "model.json").write_text(json.dumps(d))
    with pytest.raises(SidecarError) as e:
        read_sidecar(tmp_path / "model.onnx")
    text = str(e.value)
    assert message in text and str(tmp_path / "model.json") in text and "\n" not in text, text
    assert "export the model again" in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "not a defr-export sidecar (a list, not a JSON object)"),
        ('{"format": "other/9"}', "not a defr-export sidecar (format 'other/9'"),
        ('{"format": "defr-export/2", "input": {"image_size": 1' + "0" * 400 + "}}", "does not fit in 64 bits"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"input": NaN}', "NaN and Infinity are not allowed"),
    ],
)
def test_unreadable_json_is_one_line(tmp_path, text, message):
    (tmp_path / "model.json").write_text(text)
    with pytest.raises(SidecarError, match=re.escape(message)):
        read_sidecar(tmp_path / "model.onnx")


def test_file_checks_cover_external_data(sidecar, tmp_path):
    """Every byte a model is computed from is hashed: the file and the external data it loads."""
    (tmp_path / "model.onnx").write_bytes(b"graph")
    (tmp_path / "weights.bin").write_bytes(b"wts")
    entry = FileEntry("fp32", Digest.of(tmp_path / "model.onnx"), {"weights.bin": Digest.of(tmp_path / "weights.bin")})
    checked = Sidecar(**{**sidecar.__dict__, "files": {"model.onnx": entry}, "engine": None})
    assert checked.check_file(tmp_path / "model.onnx") == entry
    (tmp_path / "weights.bin").write_bytes(b"WTS")
    with pytest.raises(SidecarError, match="weights.bin: checksum differs .* external data of model.onnx"):
        checked.check_file(tmp_path / "model.onnx")
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(SidecarError, match="weights.bin: missing"):
        checked.check_file(tmp_path / "model.onnx")


# --- the record covers itself (issue 28, item 11) ---------------------------------------------------------------


def _edit_mean(d):
    d["input"]["mean"] = [0.5, 0.5, 0.5]


def _reverse_class_objects(d):
    d["class_objects"] = d["class_objects"][::-1]


def _claim_int8(d):
    d["files"]["model.onnx"]["precision"] = "int8"


def _claim_hard(d):
    d["graph"]["mask_mode"] = "hard"


@pytest.mark.parametrize("edit", [_edit_mean, _reverse_class_objects, _claim_int8, _claim_hard])
def test_an_edited_sidecar_is_refused(sidecar, tmp_path, edit):
    """Fields that pass every check but change results (or claim another graph) no longer match the digest."""
    d = sidecar.to_dict()
    (tmp_path / "model.json").write_text(json.dumps(d, indent=2))
    assert read_sidecar(tmp_path / "model.onnx") == sidecar
    edit(d)
    (tmp_path / "model.json").write_text(json.dumps(d, indent=2))
    with pytest.raises(SidecarError, match="edited after export"):
        read_sidecar(tmp_path / "model.onnx")
    del d["sidecar_sha256"]
    (tmp_path / "model.json").write_text(json.dumps(d))
    with pytest.raises(SidecarError, match="sidecar_sha256 is missing"):
        read_sidecar(tmp_path / "model.onnx")


def test_format_2_files_are_read_without_a_digest(sidecar, tmp_path):
    d = sidecar.to_dict()
    del d["sidecar_sha256"]
    d["format"] = "defr-export/2"
    (tmp_path / "model.json").write_text(json.dumps(d))
    assert read_sidecar(tmp_path / "model.onnx") == sidecar
