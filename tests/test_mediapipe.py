"""`export --mediapipe` and MediaPipe Tasks' ImageClassifier on the exported model.

MediaPipe's ImageClassifier takes uint8/float32 RGB input only, so the int8
model goes in through a variant with the same int8 graph (`tasks`). The
ImageClassifier tests need the optional `mediapipe` package and skip
without it (`pip install --no-deps "mediapipe>=1.2.3,<2"`: its opencv
requirement would replace this package's OpenCV).
"""

import json

import numpy as np
import pytest
from conftest import make_patterns

from lenet_edge import metadata as md
from lenet_edge import tasks
from lenet_edge.errors import ModelError
from lenet_edge.inference import softmax
from lenet_edge.runtimes import open_model


@pytest.fixture(scope="module")
def images():
    return make_patterns(20, seed=7)[0]  # 200 digits of the tiny run's kind


def needs_mediapipe():
    if tasks.mediapipe_version() is None:
        pytest.skip(f"mediapipe is not installed; {tasks.MEDIAPIPE_HINT}")


def test_the_variant_runs_the_int8_graph_unchanged(variants_run, images):
    variant = (variants_run / tasks.MEDIAPIPE_FILE).read_bytes()
    int8 = (variants_run / "lenet5_int8.tflite").read_bytes()
    manifest = json.loads((variants_run / "manifest.json").read_text())
    check = manifest["export"]["mediapipe"]
    assert check["top1_agreement_with_int8"] == 1.0 and check["max_probability_difference"] < 1e-5
    assert check["ops"][0] == "CONV_2D" and check["tensors_compared"] > 20
    assert tasks.check_body(variant, int8)["ops"] == check["ops"]
    with pytest.raises(ModelError, match="differs from the int8 model|is not in the variant"):
        tasks.check_body(variant, (variants_run / "lenet5_float32.tflite").read_bytes())
    # uint8 RGB in, the int8 model's own probabilities out (softmax of its dequantized logits)
    int8_model = open_model(int8, xnnpack=False)
    expected = softmax(int8_model.scores(images))
    got = tasks.variant_outputs(variant, images)
    assert got.shape == (len(images), 10) and np.abs(got - expected).max() < 1e-5
    assert np.array_equal(got.argmax(1), int8_model.raw_all(images).argmax(1))
    found = md.read_metadata(variant)
    assert found["inputs"][0]["color_space"] == "RGB" and found["outputs"][0]["name"] == "probability"


def test_mediapipe_refuses_the_int8_model_and_reads_the_variant(variants_run, images):
    needs_mediapipe()
    with pytest.raises(ModelError, match="uint8/float32, got INT8"):  # the reason the variant exists
        tasks.classify(variants_run / "lenet5_int8.tflite", images[:1])
    result = tasks.classify(variants_run / tasks.MEDIAPIPE_FILE, images)
    assert result["names"] == [str(d) for d in range(10)]  # labels.txt from the metadata
    assert result["display_names"] == list("۰۱۲۳۴۵۶۷۸۹")  # labels_fa.txt, locale fa
    # MediaPipe runs XNNPACK, so its reference is LiteRT with XNNPACK on the int8 model
    litert = open_model(variants_run / "lenet5_int8.tflite", xnnpack=True)
    raw = litert.raw_all(images)
    expected = softmax(litert.logits(raw))
    assert np.abs(result["scores"] - expected).max() < 1e-5
    differ = result["top1"] != raw.argmax(1)
    # where MediaPipe names another top-1, the two digits' scores are exactly tied (its sort is not stable)
    for i in np.flatnonzero(differ):
        assert result["scores"][i, result["top1"][i]] == result["scores"][i].max()
        assert raw[i, result["top1"][i]] == raw[i].max()
