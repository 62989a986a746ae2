"""`export --web`'s page in headless Chromium: drawing, dropping, bad input, the preprocessing parity, serve-web.

The page runs the exported int8 model in LiteRT.js; these tests drive it
over the DevTools protocol (`lenet_edge.chromium`): mouse and touch strokes
through the browser's input pipeline, files dropped through the DOM's drop
event, and the page's own modules imported to compare its preprocessing
with Python's pixel by pixel. They skip without Chromium or LiteRT.js
(`npm ci --prefix lenet_edge/web`), and fail so on CI.
"""

import base64
import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_run, litertjs_installed, make_patterns, needs
from PIL import Image

from lenet_edge import web
from lenet_edge.chromium import BrowserError
from lenet_edge.data.folders import load_image
from lenet_edge.data.preprocess import preprocess, to_white_on_black
from lenet_edge.data.synthetic import generate
from lenet_edge.errors import ModelError
from lenet_edge.inference import predict
from lenet_edge.tasks import MEDIAPIPE_FILE


@pytest.fixture(scope="module")
def site(variants_run, chromium):
    """The exported web/ folder on a loopback port, plus a model without metadata and one of the wrong shape."""
    from test_metadata import strip

    extra = {
        "bare.tflite": strip((variants_run / "lenet5_int8.tflite").read_bytes()),
        "rgb.tflite": variants_run / MEDIAPIPE_FILE,
        "notes.png": b"these are notes, not an image\n",
    }
    with web.serving(root=variants_run / web.WEB_DIR, routes=extra) as server:
        yield server


@pytest.fixture(scope="module")
def page(chromium, site):
    with chromium.page() as tab:
        tab.send("Network.enable")
        yield tab


def open_page(page, site, query: str = "") -> None:
    page.goto(site.url + "index.html" + query)
    page.wait_for("window.lenet && window.lenet.state !== 'loading'", timeout=60)


def pad_box(page) -> tuple[float, float, float]:
    return tuple(page.evaluate("(() => {const r = pad.getBoundingClientRect(); return [r.left, r.top, r.width];})()"))


def seven(page) -> None:
    """A Persian ۷: two strokes meeting at the bottom, drawn with the mouse."""
    x, y, w = pad_box(page)
    left = [(x + w * (0.28 + 0.22 * t / 24), y + w * (0.18 + 0.64 * t / 24)) for t in range(25)]
    right = [(x + w * (0.72 - 0.22 * t / 24), y + w * (0.18 + 0.64 * t / 24)) for t in range(25)]
    page.stroke(left)
    page.stroke(right)


def drop(page, url: str, name: str, kind: str = "") -> None:
    """Drop the file at `url` (fetched by the page) on the page, as a user's drag and drop delivers it."""
    page.evaluate(
        f"""(async () => {{
          const blob = await (await fetch({json.dumps(url)})).blob();
          const data = new DataTransfer();
          data.items.add(new File([blob], {json.dumps(name)}, {{type: {json.dumps(kind)}}}));
          document.dispatchEvent(new DragEvent("drop", {{dataTransfer: data, bubbles: true, cancelable: true}}));
        }})()"""
    )


def shown_error(page) -> str | None:
    return page.evaluate(
        "document.getElementById('error').hidden ? null : document.getElementById('error').textContent"
    )


def test_export_writes_a_folder_that_works_offline(variants_run, page, site):
    folder = variants_run / web.WEB_DIR
    assert sorted(p.name for p in folder.iterdir()) == sorted(web.FOLDER_FILES)
    assert (folder / web.MODEL_FILE).read_bytes() == (variants_run / "lenet5_int8.tflite").read_bytes()
    manifest = json.loads((variants_run / "manifest.json").read_text())
    assert all(f"web/{name}" in manifest["artifacts"] for name in web.FOLDER_FILES)
    open_page(page, site)
    assert page.evaluate("window.lenet.state") == "ready", shown_error(page)
    assert page.evaluate("window.lenet.model.input") == "int8"
    assert "LeNet-5 Persian digits" in page.evaluate("document.getElementById('model-line').textContent")
    # every request the page made went to this server: no CDN, no other host
    requested = []
    while True:
        try:
            event = page.browser.wait_event(page.session, "Network.requestWillBeSent", timeout=0.2)
        except BrowserError:  # no more events
            break
        requested.append(event["request"]["url"])
    assert requested and all(url.startswith(site.url) for url in requested), requested


def test_drawing_shows_the_digit_predict_reads(page, site, variants_run, tmp_path):
    open_page(page, site)
    seven(page)
    result = page.wait_for("window.lenet.result", timeout=10)
    assert page.evaluate("document.querySelectorAll('#top li').length") == 3
    shown = page.evaluate("[...document.querySelectorAll('#top li')].map(li => Number(li.dataset.digit))")
    assert shown == [d for d, _ in result["top"]] and result["digit"] == shown[0]
    assert result["persian"] == "۰۱۲۳۴۵۶۷۸۹"[result["digit"]]
    # the canvas as a PNG through `lenet-edge predict`: the same 28x28 input, the same digits and confidences
    png = tmp_path / "drawn.png"
    png.write_bytes(base64.b64decode(page.evaluate("pad.toDataURL('image/png')").split(",", 1)[1]))
    expected = preprocess(load_image(png))
    assert np.array_equal(np.array(page.evaluate("window.lenet.input"), np.uint8).reshape(28, 28), expected)
    (read,) = predict([png], model_path=variants_run / "lenet5_int8.tflite")
    assert read["digit"] == result["digit"]
    np.testing.assert_allclose([p for _, p in result["top"]], [p for _, p in read["top_k"]], atol=1e-6)
    assert [d for d, _ in result["top"]] == [d for d, _ in read["top_k"]]


def test_touch_and_clear(page, site):
    open_page(page, site)
    x, y, w = pad_box(page)
    page.stroke([(x + w * 0.5, y + w * (0.15 + 0.7 * t / 20)) for t in range(21)], touch=True)  # a ۱
    page.wait_for("window.lenet.result", timeout=10)
    assert sum(page.evaluate("window.lenet.input")) > 0
    page.evaluate("document.getElementById('clear').click()")
    assert page.evaluate("window.lenet.result") is None
    assert page.evaluate("document.querySelectorAll('#top li').length") == 0


def test_bad_input_is_shown_in_the_page(page, site, variants_run):
    open_page(page, site, "?model=bare.tflite")
    assert page.evaluate("window.lenet.state") == "error"
    assert "no TFLite metadata" in shown_error(page)
    assert "Nothing can be read until a model is loaded" in page.evaluate(
        "document.getElementById('status').textContent"
    )
    open_page(page, site, "?model=missing.tflite")
    assert page.evaluate("window.lenet.state") == "error" and "missing.tflite: cannot be fetched (404" in shown_error(
        page
    )
    open_page(page, site, "?model=rgb.tflite")
    assert "(1, 28, 28, 3)" in shown_error(page) and "(1, 28, 28, 1)" in shown_error(page)
    open_page(page, site)
    drop(page, "notes.png", "notes.png", "image/png")
    page.wait_for("document.getElementById('error').hidden === false", timeout=10)
    assert "notes.png: not an image this browser can read" in shown_error(page)
    drop(page, "bare.tflite", "bare.tflite")
    page.wait_for("(document.getElementById('error').textContent || '').includes('bare.tflite')", timeout=10)
    assert "no TFLite metadata" in shown_error(page) and "previous model stays in use" in shown_error(page)
    assert page.evaluate("window.lenet.state") == "ready"
    drop(page, "model.tflite", "other.tflite")  # a good model, dropped: taken, and the error cleared
    page.wait_for("window.lenet.model.file === 'other.tflite'", timeout=10)
    assert shown_error(page) is None


def test_dropped_image_is_read_as_predict_reads_it(page, site, variants_run, tmp_path):
    image = Image.fromarray(255 - np.kron(make_patterns(1, seed=9)[0][3], np.ones((5, 5), np.uint8)))  # dark on light
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    site.routes["digit.png"] = buffer.getvalue()
    (tmp_path / "digit.png").write_bytes(buffer.getvalue())
    open_page(page, site)
    drop(page, "digit.png", "digit.png", "image/png")
    result = page.wait_for("window.lenet.result", timeout=10)
    (read,) = predict([tmp_path / "digit.png"], model_path=variants_run / "lenet5_int8.tflite")
    assert result["digit"] == read["digit"] and shown_error(page) is None


def parity_images(rng) -> list[np.ndarray]:
    """Gray images of every kind preprocess meets: synthetic digits at many sizes and aspects, both polarities,
    Hoda-sized crops, tiny and blank images, a faint speck."""
    digits = generate(60, seed=3)[0]
    images = []
    for k, digit in enumerate(digits):
        h, w = int(rng.integers(3, 160)), int(rng.integers(3, 160))
        image = np.asarray(Image.fromarray(digit).resize((w, h), Image.Resampling.BILINEAR))
        images.append(255 - image if k % 3 == 0 else image)
    images += [np.zeros((1, 1), np.uint8), np.full((5, 7), 255, np.uint8), np.zeros((40, 30), np.uint8)]
    speck = np.zeros((30, 30), np.uint8)
    speck[12, 17] = 70  # one faint pixel: Lanczos can wipe it
    images.append(speck)
    images.append(rng.integers(0, 256, (33, 47), dtype=np.uint8))  # noise: the worst case for rounding
    return images


def needs_pillow_13():
    import PIL

    if int(PIL.__version__.split(".")[0]) < 13:  # Pillow 13 chose a new order of the resampler's two passes
        pytest.skip(f"preprocess.js follows Pillow 13's resampler; Pillow {PIL.__version__} is installed")


def test_preprocessing_parity_with_python(page, site):
    """preprocess.js against lenet_edge.data.preprocess on the same gray images: pixel-exact."""
    needs_pillow_13()
    open_page(page, site)
    images = parity_images(np.random.default_rng(0))
    payload = [
        {"w": int(im.shape[1]), "h": int(im.shape[0]), "data": base64.b64encode(im.tobytes()).decode()} for im in images
    ]
    got = page.evaluate(
        f"""(async () => {{
          const p = await import("./preprocess.js");
          return {json.dumps(payload)}.map(({{w, h, data}}) => {{
            const gray = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            return Array.from(p.preprocess(p.toWhiteOnBlack(gray, w, h), w, h));
          }});
        }})()"""
    )
    for image, js in zip(images, got, strict=True):
        expected = preprocess(to_white_on_black(image))
        assert np.array_equal(np.array(js, np.uint8).reshape(28, 28), expected), image.shape


def test_image_files_decode_to_the_same_input(page, site, tmp_path):
    """An image file through the page's decoding (the browser's) and Python's load_image: the same 28x28 input."""
    needs_pillow_13()
    open_page(page, site)
    digit = generate(1, seed=11)[0][0]
    big = np.asarray(Image.fromarray(digit).resize((90, 120), Image.Resampling.BICUBIC))
    colour = np.stack([255 - big // 2, 255 - big, 255 - big // 3], axis=-1)  # blue-ish ink on white paper
    files = {
        "gray.png": Image.fromarray(big),
        "inverted.png": Image.fromarray(255 - big),
        "colour.png": Image.fromarray(colour.astype(np.uint8), "RGB"),
        "colour.bmp": Image.fromarray(colour.astype(np.uint8), "RGB"),
    }
    for name, image in files.items():
        buffer = io.BytesIO()
        image.save(buffer, name.rsplit(".", 1)[1].upper())
        site.routes[name] = buffer.getvalue()
        (tmp_path / name).write_bytes(buffer.getvalue())
    got = page.evaluate(
        f"""(async () => {{
          const p = await import("./preprocess.js");
          const out = {{}};
          for (const name of {json.dumps(list(files))}) {{
            const found = await p.fromBlob(await (await fetch(name)).blob(), name);
            out[name] = Array.from(found.input);
          }}
          return out;
        }})()"""
    )
    for name in files:
        expected = preprocess(load_image(tmp_path / name))
        assert np.array_equal(np.array(got[name], np.uint8).reshape(28, 28), expected), name


def test_serve_web_serves_the_folder(variants_run, tmp_path):
    needs("LiteRT.js", litertjs_installed(), "`npm ci --prefix lenet_edge/web` (.ci/run runs it)")
    process = subprocess.Popen(
        [sys.executable, "-m", "lenet_edge", "serve-web", str(variants_run), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("serving ") and " at http://127.0.0.1:" in line, line + process.stderr.read()
        url = line.split(" at ", 1)[1].split()[0]
        with urllib.request.urlopen(url + "index.html", timeout=10) as answer:
            assert answer.status == 200 and b"Handwritten Persian digits" in answer.read()
            assert answer.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        with urllib.request.urlopen(url + "litert_wasm_internal.wasm", timeout=10) as answer:
            assert answer.headers["Content-Type"] == "application/wasm"
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url + "../manifest.json", timeout=10)
    finally:
        process.terminate()
        process.wait(10)
    empty = subprocess.run(
        [sys.executable, "-m", "lenet_edge", "serve-web", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert empty.returncode == 1 and "no exported web page; run `lenet-edge export" in empty.stderr


def test_export_web_without_litertjs_fails_before_converting(exported_run, tmp_path, monkeypatch):
    from lenet_edge.conversion import export_run

    run = copy_run(exported_run, tmp_path / "run")
    before = (run / "manifest.json").read_bytes()
    monkeypatch.setattr(web, "PACKAGE_DIR", tmp_path / "nowhere")
    started = time.monotonic()
    with pytest.raises(ModelError, match=r"LiteRT.js is not installed; run `npm ci --prefix .*nowhere`"):
        export_run(run, int8=True, web=True)
    assert time.monotonic() - started < 20 and (run / "manifest.json").read_bytes() == before
    assert not (run / web.WEB_DIR).exists()


def test_page_sources_name_no_other_host():
    for name in web.PAGE_FILES:
        text = (web.PAGE_DIR / name).read_text()
        assert "http://" not in text and "https://" not in text and "cdn" not in text.lower(), name


@pytest.mark.parametrize("path", [Path("lenet_edge/web/package.json"), Path("lenet_edge/web/package-lock.json")])
def test_litertjs_is_pinned(path):
    from conftest import PROJECT_ROOT

    text = json.loads((PROJECT_ROOT / path).read_text())
    found = text["dependencies"]["@litertjs/core"] if "lock" not in path.name else None
    if found is not None:
        assert found[0].isdigit(), "an exact version, not a range"
    else:
        assert text["packages"]["node_modules/@litertjs/core"]["integrity"].startswith("sha512-")
