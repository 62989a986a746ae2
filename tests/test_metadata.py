"""TFLite metadata in the exported models: what it says, that readers find it, that it changes no arithmetic.

The round trip is checked against this package's reader and the page's
(`tflite.js`, in test_web); MediaPipe's ImageClassifier reading the labels
is in test_mediapipe.
"""

import json

import numpy as np
import pytest
from conftest import copy_run, make_patterns

from lenet_edge import metadata as md
from lenet_edge.compat import tflite_schema
from lenet_edge.errors import ModelError
from lenet_edge.runtimes import open_model
from lenet_edge.runtimes.micro import min_arena_bytes


def strip(model: bytes) -> bytes:
    """The model without its TFLITE_METADATA entry and buffer, packed by LiteRT's plain generated code."""
    import flatbuffers

    schema = tflite_schema()
    graph = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    entry = next(m for m in graph.metadata if m.name.decode() == md.METADATA_NAME)
    graph.metadata = [m for m in graph.metadata if m is not entry]
    graph.buffers[entry.buffer] = schema.BufferT()
    builder = flatbuffers.Builder(len(model))
    builder.Finish(graph.Pack(builder), file_identifier=md.TFLITE_IDENTIFIER)
    return bytes(builder.Output())


@pytest.fixture(scope="module")
def images():
    return make_patterns(20, seed=5)[0]  # 200 digits of the tiny run's kind


def test_export_writes_metadata_a_reader_understands(exported_run):
    manifest = json.loads((exported_run / "manifest.json").read_text())
    for key, name in (("float32_tflite", "lenet5_float32.tflite"), ("int8_tflite", "lenet5_int8.tflite")):
        found = md.read_metadata((exported_run / name).read_bytes())
        recorded = manifest["artifacts"][key]["metadata"]
        assert found["name"] == recorded["name"] and found["version"] == recorded["version"]
        assert found["version"].startswith("0.") and "+" in found["version"]  # lenet-edge version + weights
        assert found["author"] == "lenet-edge" and found["min_parser_version"] == "1.0.0"
        assert "no dataset licence" not in found["license"]  # trained on a .npz: that data's terms apply
        assert found["files"] == {
            "labels.txt": "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n",
            "labels_fa.txt": "۰\n۱\n۲\n۳\n۴\n۵\n۶\n۷\n۸\n۹\n",
        }
        (image,), (scores,) = found["inputs"], found["outputs"]
        assert image["content"] == "image" and image["color_space"] == "GRAYSCALE" and image["size"] == [28, 28]
        assert image["mean"] == [0.0] and image["std"] == [255.0]  # x = pixel / 255
        assert "centre of mass" in image["description"] and "white ink" in image["description"]
        assert [f["name"] for f in scores["associated_files"]] == ["labels.txt", "labels_fa.txt"]
        assert [f["locale"] for f in scores["associated_files"]] == [None, "fa"]
        assert all(f["type"] == md.TENSOR_AXIS_LABELS for f in scores["associated_files"])
        assert recorded["identical_outputs_checked_on"] == manifest["data"]["split_sizes"]["val"]
    int8 = md.read_metadata((exported_run / "lenet5_int8.tflite").read_bytes())
    assert int8["inputs"][0]["stats"] == {"min": [-128.0], "max": [127.0]}
    assert "= pixel - 128" in int8["inputs"][0]["description"]  # QAT's input scale 1/255, zero point -128


def test_metadata_changes_no_arithmetic(exported_run, images):
    """The model with and without metadata: the same raw outputs in LiteRT (both kernel sets) and in TFLM."""
    for name in ("lenet5_float32.tflite", "lenet5_int8.tflite"):
        written = (exported_run / name).read_bytes()
        bare = strip(written)
        assert md.read_metadata(bare) is None and len(bare) < len(written)
        for xnnpack in (False, True):
            before = open_model(bare, xnnpack=xnnpack).raw_all(images)
            after = open_model(written, xnnpack=xnnpack).raw_all(images)
            assert np.array_equal(before, after), (name, xnnpack)
        if "int8" in name:
            np.testing.assert_array_equal(
                open_model(bare, "tflm").raw_all(images[:20]), open_model(written, "tflm").raw_all(images[:20])
            )
            assert min_arena_bytes(bare) == min_arena_bytes(written)  # metadata is not in the tensor arena


def test_buffers_stay_16_byte_aligned(exported_run):
    schema = tflite_schema()
    model = (exported_run / "lenet5_int8.tflite").read_bytes()
    graph = schema.Model.GetRootAsModel(model, 0)
    starts = [graph.Buffers(i)._tab.Vector(4) for i in range(graph.BuffersLength()) if graph.Buffers(i).DataLength()]
    assert starts and all(start % 16 == 0 for start in starts)


def test_embedding_again_replaces_the_metadata_and_is_deterministic(exported_run):
    model = (exported_run / "lenet5_int8.tflite").read_bytes()
    card = md.ModelCard("name", "description", "2.0", "someone", "CC0")
    inputs, outputs = md.tensor_infos(model, "int8_tflite")
    once = md.embed(model, md.metadata_buffer(card, inputs, outputs), md.label_files())
    twice = md.embed(once, md.metadata_buffer(card, inputs, outputs), md.label_files())
    assert once == twice  # the old entry and zip replaced, byte for byte the same result
    found = md.read_metadata(once)
    assert (found["version"], found["author"], found["license"]) == ("2.0", "someone", "CC0")
    assert md.read_metadata(once)["files"]["labels_fa.txt"].split() == list("۰۱۲۳۴۵۶۷۸۹")


def test_not_a_model_is_refused():
    with pytest.raises(ModelError, match="not a TFLite flatbuffer"):
        md.embed(b"GIF89a not a model", b"", {})
    with pytest.raises(ModelError, match="not a TFLite flatbuffer"):
        md.read_metadata(b"\0" * 16)


def test_licence_follows_the_training_data():
    assert md.default_license({"kind": "cdb", "source": "/data/hoda"}) == md.HODA_LICENSE
    assert md.default_license({"kind": "synthetic", "source": "synthetic:3000"}) == md.SYNTHETIC_LICENSE
    assert "'digits.npz'" in md.default_license({"kind": "npz", "source": "/x/digits.npz"})


def test_model_cards_name_each_precision():
    manifest = {"config": {"arch": "lenet5"}, "data": {"kind": "synthetic", "source": "synthetic:3000"}}
    cards = {
        key: md.model_card(manifest, key, author="a", license=None, weights_sha256="0" * 64) for key in md.PRECISIONS
    }
    assert cards["int8_tflite"].name == "LeNet-5 Persian digits (full-integer int8)"
    assert cards["mixed_tflite"].name == "LeNet-5 Persian digits (mixed float32/int8)"  # export --mixed's model
    assert len({card.description for card in cards.values()}) == len(cards)  # each says how it computes


def test_export_options_set_author_and_licence(exported_run, tmp_path):
    from click.testing import CliRunner

    from lenet_edge.cli import main

    run = copy_run(exported_run, tmp_path / "run")
    result = CliRunner().invoke(main, ["export", "--dir", str(run), "--author", "A Lab", "--license", "MIT"])
    assert result.exit_code == 0, result.output
    found = md.read_metadata((run / "lenet5_float32.tflite").read_bytes())
    assert (found["author"], found["license"]) == ("A Lab", "MIT")
    assert "TFLite metadata in every model" in result.output
    bad = CliRunner().invoke(main, ["export", "--dir", str(run), "--author", " "])
    assert bad.exit_code == 2 and "author and license must be non-empty" in bad.output
