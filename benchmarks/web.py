"""Mobile and web on Hoda: MediaPipe's ImageClassifier, the page's preprocessing, the page, `bench --on browser`.

    python benchmarks/web.py [--data ../shared/data/hoda] [--run benchmarks/runs/web] [--runs 2000]

1. `lenet-edge train` with default settings on Hoda (skipped when --run already holds a trained run), then
   `lenet-edge export --int8 --ptq --mediapipe --web`;
2. MediaPipe Tasks: every Hoda test digit through MediaPipe's Python `ImageClassifier` on
   `lenet5_int8_mediapipe.tflite`, its top-1 against LiteRT's on `lenet5_int8.tflite` (needs
   `pip install --no-deps "mediapipe>=1.2.3,<2"`; the step is reported as skipped without it);
3. preprocessing parity: the page's preprocess.js in headless Chromium against Python's `preprocess` on
   every raw Hoda test record, and on 1,000 of them written as image files (PNG and JPEG, dark ink on
   light paper, 3x) decoded by the browser against Python's `load_image`;
4. the page: a ۷ drawn with the mouse in headless Chromium, the screenshot saved as
   benchmarks/figures/web_page_7.png;
5. `lenet-edge bench --on browser` on the test split: the host's LiteRT table beside LiteRT.js's.

Rewrites benchmarks/WEB.md. Run artifacts go to benchmarks/runs/ (git-ignored: Hoda's licence); only
figures land in WEB.md (counts and rates, no per-image output).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import DEFAULT_HODA, HERE, hoda_runs, machine_line, portable, run

FIGURE = HERE / "figures" / "web_page_7.png"
FILE_SAMPLE = 1000  # Hoda test records written as image files for the decoding parity


def mediapipe_agreement(run_dir: Path, images: np.ndarray) -> dict:
    """MediaPipe's ImageClassifier on the variant against LiteRT (XNNPACK, as MediaPipe runs) on the int8 model."""
    from lenet_edge.errors import ModelError
    from lenet_edge.inference import softmax
    from lenet_edge.runtimes import open_model
    from lenet_edge.tasks import MEDIAPIPE_FILE, MEDIAPIPE_HINT, classify, mediapipe_version

    if mediapipe_version() is None:
        return {"skipped": f"mediapipe is not installed; {MEDIAPIPE_HINT}"}
    try:
        classify(run_dir / "lenet5_int8.tflite", images[:1])
        refusal = "accepted (unexpected)"
    except ModelError as exc:
        refusal = str(exc).split(": ", 2)[-1]
    started = time.perf_counter()
    found = classify(run_dir / MEDIAPIPE_FILE, images)
    seconds = time.perf_counter() - started
    result = {"mediapipe": mediapipe_version(), "n": len(images), "refusal": refusal, "seconds": seconds}
    for xnnpack in (True, False):
        litert = open_model(run_dir / "lenet5_int8.tflite", xnnpack=xnnpack)
        raw = litert.raw_all(images)
        top1 = raw.argmax(1)
        differ = found["top1"] != top1
        tied = [bool(raw[i, found["top1"][i]] == raw[i].max()) for i in np.flatnonzero(differ)]
        result["xnnpack" if xnnpack else "reference"] = {
            "agreement": float((~differ).mean()),
            "differ": int(differ.sum()),
            "differ_tied": int(sum(tied)),
            "max_score_difference": float(np.abs(found["scores"] - softmax(litert.logits(raw))).max()),
        }
    result["names"], result["display_names"] = found["names"], found["display_names"]
    return result


def parity(run_dir: Path, records: list[np.ndarray]) -> dict:
    """preprocess.js in headless Chromium against Python on raw records, and on image files made of some."""
    from PIL import Image

    from lenet_edge.chromium import Chromium
    from lenet_edge.data.folders import load_image
    from lenet_edge.data.preprocess import preprocess
    from lenet_edge.web import WEB_DIR, serving

    expected = np.stack([preprocess(r) for r in records])
    shapes = [[int(r.shape[0]), int(r.shape[1])] for r in records]
    routes = {
        "parity/records.bin": b"".join(np.ascontiguousarray(r).tobytes() for r in records),
        "parity/expected.bin": expected.tobytes(),
        "parity/shapes.json": json.dumps(shapes).encode(),
    }
    rng = np.random.default_rng(0)
    chosen = sorted(rng.choice(len(records), min(FILE_SAMPLE, len(records)), replace=False).tolist())
    with tempfile.TemporaryDirectory() as scratch:  # Hoda-derived files: never kept
        file_expected = {}
        for i in chosen:
            paper = Image.fromarray(255 - records[i]).resize(
                (records[i].shape[1] * 3, records[i].shape[0] * 3), Image.Resampling.BICUBIC
            )
            for kind in ("png", "jpeg"):
                path = Path(scratch) / f"{i}.{kind}"
                paper.save(path, kind.upper(), **({"quality": 95} if kind == "jpeg" else {}))
                routes[f"parity/{i}.{kind}"] = path.read_bytes()
                file_expected[f"{i}.{kind}"] = preprocess(load_image(path))
        routes["parity/files.json"] = json.dumps(sorted(file_expected)).encode()
        routes["parity/files_expected.bin"] = np.stack([file_expected[k] for k in sorted(file_expected)]).tobytes()
        script = """(async () => {
          const p = await import("./preprocess.js");
          const bytes = async (u) => new Uint8Array(await (await fetch(u)).arrayBuffer());
          const records = await bytes("parity/records.bin"), expected = await bytes("parity/expected.bin");
          const shapes = await (await fetch("parity/shapes.json")).json();
          let at = 0, same = 0, worst = 0, pixels = 0;
          const t0 = performance.now();
          shapes.forEach(([h, w], i) => {
            const out = p.preprocess(records.subarray(at, at + h * w), w, h);
            at += h * w;
            let ok = true;
            for (let k = 0; k < 784; k++) {
              const d = Math.abs(out[k] - expected[i * 784 + k]);
              if (d) { ok = false; pixels++; worst = Math.max(worst, d); }
            }
            if (ok) same++;
          });
          const ms = performance.now() - t0;
          const names = await (await fetch("parity/files.json")).json();
          const fileExpected = await bytes("parity/files_expected.bin");
          const files = {};
          for (let i = 0; i < names.length; i++) {
            const kind = names[i].split(".")[1];
            const found = await p.fromBlob(await (await fetch("parity/" + names[i])).blob(), names[i]);
            let d = 0;
            for (let k = 0; k < 784; k++) d = Math.max(d, Math.abs(found.input[k] - fileExpected[i * 784 + k]));
            const f = files[kind] = files[kind] || {n: 0, same: 0, worst: 0};
            f.n++; f.same += d === 0 ? 1 : 0; f.worst = Math.max(f.worst, d);
          }
          return {n: shapes.length, same, worst, pixels, ms, files};
        })()"""
        with serving(root=run_dir / WEB_DIR, routes=routes) as server, Chromium() as chromium, chromium.page() as page:
            page.goto(server.url + "index.html")
            page.wait_for("window.lenet && window.lenet.state !== 'loading'", timeout=60)
            return page.evaluate(script, timeout=900)


def screenshot(run_dir: Path) -> dict:
    """A ۷ drawn on the page with the mouse; the page as PNG in benchmarks/figures/."""
    from lenet_edge.chromium import Chromium
    from lenet_edge.fileio import atomic_write_bytes
    from lenet_edge.web import WEB_DIR, serving

    with serving(root=run_dir / WEB_DIR) as server, Chromium() as chromium:
        with chromium.page() as page:
            page.viewport(900, 640)
            page.goto(server.url + "index.html")
            page.wait_for("window.lenet && window.lenet.state === 'ready'", timeout=60)
            x, y, w = page.evaluate(
                "(() => {const r = pad.getBoundingClientRect(); return [r.left, r.top, r.width];})()"
            )
            # ۷: two strokes from the top that meet at the bottom, as it is written
            page.stroke([(x + w * (0.3 + 0.2 * t / 30), y + w * (0.2 + 0.62 * t / 30)) for t in range(31)])
            page.stroke([(x + w * (0.72 - 0.22 * t / 30), y + w * (0.18 + 0.64 * t / 30)) for t in range(31)])
            result = page.wait_for("window.lenet.result", timeout=20)
            time.sleep(0.3)  # the frame after the last update
            FIGURE.parent.mkdir(exist_ok=True)
            atomic_write_bytes(FIGURE, page.screenshot())
            return {**result, "model": page.evaluate("window.lenet.model")}


def render(
    manifest: dict, bench: dict, bench_md: str, mediapipe: dict, parity_result: dict, drawn: dict, data_name: str
) -> str:
    host = bench["targets"][0]
    browser = next(t for t in bench["targets"] if t["target"] == "browser")
    export = manifest["export"]
    check = export["mediapipe"]
    int8_meta = manifest["artifacts"]["int8_tflite"]["metadata"]
    lines = [
        "# Mobile and web: TFLite metadata, MediaPipe Tasks, the web page, LiteRT.js in the browser",
        "",
        "Regenerated by `python benchmarks/web.py` (do not edit by hand). Model: `lenet-edge train` defaults on "
        "Hoda's training digits, `lenet-edge export --int8 --ptq --mediapipe --web`; data: the 20,000 digits of "
        "Hoda's test set (never used for training or model selection).",
        "",
        machine_line(host, manifest["versions"]),
        "",
        "## TFLite metadata",
        "",
        f"Every exported model carries it: `{int8_meta['name']}`, version `{int8_meta['version']}`, author "
        f'`{int8_meta["author"]}`, licence "{int8_meta["license"]}", labels `labels.txt` (0-9) and '
        "`labels_fa.txt` (۰-۹, locale fa), the input contract and normalization (mean 0, std 255). It adds "
        f"{int8_meta['bytes_added']:,} bytes to the int8 model and changes no output: export checked the raw "
        f"outputs with and without it on {int8_meta['identical_outputs_checked_on']:,} validation digits (identical), "
        "and the tests check LiteRT's two kernel sets and TensorFlow Lite Micro (outputs and tensor arena).",
        "",
        "| model | bytes with metadata | bytes added | of which the metadata flatbuffer | "
        "outputs checked unchanged on |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| `{artifact['path']}` | {artifact['size_bytes']:,} | {artifact['metadata']['bytes_added']:,} | "
            f"{artifact['metadata']['metadata_bytes']:,} | {artifact['metadata']['identical_outputs_checked_on']:,} |"
            for artifact in manifest["artifacts"].values()
            if artifact.get("metadata")
        ),
        "",
        "The rest of what is added is the zip of the two label files and the padding that keeps every weight "
        "buffer 16-byte aligned.",
        "",
        "## MediaPipe Tasks: ImageClassifier",
        "",
    ]
    if "skipped" in mediapipe:
        lines += [f"Not measured: {mediapipe['skipped']}.", ""]
    else:
        x, ref = mediapipe["xnnpack"], mediapipe["reference"]
        lines += [
            f'MediaPipe {mediapipe["mediapipe"]} refuses `lenet5_int8.tflite` as it is: "{mediapipe["refusal"]}" '
            "(its ImageClassifier takes uint8 or float32 RGB input only). `lenet5_int8_mediapipe.tflite` is the "
            f"same int8 graph ({', '.join(check['ops'])}; {check['tensors_compared']} tensors compared, weights "
            "and scales identical) behind a uint8 RGB input (QUANTIZE uint8 -> int8, exact) and a float SOFTMAX "
            "output.",
            "",
            f"On all {mediapipe['n']:,} Hoda test digits (preprocessed, given as SRGB images), MediaPipe's "
            f"top-1 category equals LiteRT's argmax on `lenet5_int8.tflite`:",
            "",
            "| LiteRT on lenet5_int8.tflite | same top-1 | differ | of which exact ties | max score difference |",
            "|---|---:|---:|---:|---:|",
            f"| XNNPACK (MediaPipe's kernels) | {100 * x['agreement']:.3f}% | {x['differ']} | {x['differ_tied']} | "
            f"{x['max_score_difference']:.2g} |",
            f"| reference kernels (`predict`'s) | {100 * ref['agreement']:.3f}% | {ref['differ']} | "
            f"{ref['differ_tied']} | {ref['max_score_difference']:.2g} |",
            "",
            "A digit differs only where two digits' scores are exactly tied (MediaPipe's sort then may list "
            "either first); a score is the softmax of the int8 model's dequantized logits, `predict`'s confidence. "
            f"Category names {''.join(mediapipe['names'])}, display names {''.join(mediapipe['display_names'])} "
            f"(from the metadata). {mediapipe['n'] / mediapipe['seconds']:,.0f} digits/s through the Python API "
            "(one `classify` call per image).",
            "",
        ]
    records, files = parity_result, parity_result["files"]
    lines += [
        "## The page's preprocessing against Python's",
        "",
        f"`preprocess.js` in headless Chromium on every raw Hoda test record ({records['n']:,} images, "
        f"3x3 to 62x62 px): **{records['same']:,} of {records['n']:,} identical** to `preprocess` pixel for pixel"
        + (f" (largest difference {records['worst']})" if records["worst"] else "")
        + f"; {records['ms'] / records['n'] * 1000:.0f} µs an image.",
        "",
        f"The same as image files (a sample of {files['png']['n']:,} records as dark ink on light paper, "
        "3x, the browser decoding them against `load_image`): PNG "
        f"{files['png']['same']:,} of {files['png']['n']:,} identical"
        + (f" (largest difference {files['png']['worst']})" if files["png"]["worst"] else "")
        + f"; JPEG (quality 95) {files['jpeg']['same']:,} of {files['jpeg']['n']:,} identical"
        + (f", largest pixel difference {files['jpeg']['worst']}" if files["jpeg"]["worst"] else "")
        + " (the browser's JPEG decoder and Pillow's may round differently).",
        "",
        "## The page",
        "",
        f"![The page after drawing a ۷ in headless Chromium](figures/{FIGURE.name})",
        "",
        f"A ۷ drawn with the mouse (two strokes, through Chromium's input pipeline) on the exported page: read as "
        f"{drawn['persian']} ({drawn['digit']}) with {100 * drawn['confidence']:.1f}%, by the "
        f"{drawn['model']['input']} model {drawn['model']['name']}, in LiteRT.js.",
        "",
        "## bench --on browser",
        "",
        f"`lenet-edge bench --dir RUN --on browser --runs {host['config']['runs']}`: the host's LiteRT, then the "
        f"same files in LiteRT.js {browser['machine']['versions']['litertjs']} in "
        f"{browser['machine']['browser']['product']} headless on the same CPU.",
        "",
        "\n".join(("#" + line) if line.startswith("## ") else line for line in bench_md.strip().splitlines()),
        "",
    ]
    text = "\n".join(lines).replace(str(Path(manifest["data"]["source"]).resolve()), data_name)
    return portable(text) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_HODA, help="the Hoda folder (.cdb files)")
    parser.add_argument("--run", type=Path, default=None, help="run directory (default benchmarks/runs/web)")
    parser.add_argument("--runs", type=int, default=2000, help="bench's timed rounds")
    args = parser.parse_args()
    runs_dir, log = hoda_runs(args.data, "web.log")
    run_dir = args.run or runs_dir / "web"
    env = {**os.environ, "LENET_EDGE_CACHE": str(runs_dir / "cache")}
    if not (run_dir / "manifest.json").is_file():
        run(["train", "--data", str(args.data), "--dir", str(run_dir)], env, log)
    run(["export", "--dir", str(run_dir), "--int8", "--ptq", "--mediapipe", "--web"], env, log)

    from lenet_edge.data.cdb import read_cdb
    from lenet_edge.data.sources import load_run_splits
    from lenet_edge.fileio import atomic_write_text
    from lenet_edge.manifest import read_manifest

    manifest = read_manifest(run_dir)
    test = load_run_splits(manifest, str(args.data), cache_dir=runs_dir / "cache")[1]["test"]
    print(f"MediaPipe ImageClassifier on {len(test.labels):,} test digits", flush=True)
    mediapipe = mediapipe_agreement(run_dir, test.images)
    print(json.dumps({k: v for k, v in mediapipe.items() if k not in ("names", "display_names")}), flush=True)
    print("preprocessing parity in headless Chromium", flush=True)
    records = read_cdb(args.data / "Test 20000.cdb").images
    parity_result = parity(run_dir, records)
    print(json.dumps(parity_result), flush=True)
    drawn = screenshot(run_dir)
    print(f"drawn ۷ read as {drawn['digit']} ({drawn['confidence']:.3f}); {FIGURE}", flush=True)
    run(["bench", "--dir", str(run_dir), "--split", "test", "--runs", str(args.runs), "--no-micro", "--on", "browser"],
        env, log)  # fmt: skip
    bench = json.loads((run_dir / "bench.json").read_text())
    bench_md = (run_dir / "bench.md").read_text()
    text = render(manifest, bench, bench_md, mediapipe, parity_result, drawn, portable(str(args.data.absolute())))
    atomic_write_text(HERE / "WEB.md", text)
    print(f"wrote {HERE / 'WEB.md'}")
    if drawn["digit"] != 7:
        sys.exit(f"the drawn ۷ was read as {drawn['digit']}: look at {FIGURE}")


if __name__ == "__main__":
    main()
