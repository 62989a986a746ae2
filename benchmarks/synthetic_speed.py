"""Throughput of the synthetic digit generator, alone and followed by `preprocess_many`.

Run from the project root: `python benchmarks/synthetic_speed.py [--n 5000] [--repeats 3]`.
Reports the best of a few timed runs after a warm-up, in images per second
of wall time and of this process's CPU time (the CPU figure is the steadier
one on a shared machine). The target is >= 5,000 images/s for the whole
pipeline on one core.
"""

from __future__ import annotations

import argparse
import json
import time

from lenet_edge.data.preprocess import preprocess_many
from lenet_edge.data.synthetic import SYNTHETIC_VERSION, generate


def _best_time(fn, repeats: int) -> tuple[float, float]:
    """Best (wall, CPU) seconds of `repeats` calls of `fn`."""
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu


def measure(n: int = 5000, repeats: int = 3, seed: int = 0) -> dict[str, float]:
    """Time `generate(n)` and `preprocess_many(generate(n))`.

    Returns:
        A flat dict whose keys carry their units.
    """
    generate(min(n, 200), seed)  # warm-up: imports, caches, allocator
    images, _ = generate(n, seed)
    gen_wall, gen_cpu = _best_time(lambda: generate(n, seed), repeats)
    pre_wall, pre_cpu = _best_time(lambda: preprocess_many(images), repeats)
    return {
        "synthetic_version": SYNTHETIC_VERSION,
        "n_images": n,
        "generate_images_per_s_wall": n / gen_wall,
        "generate_images_per_s_cpu": n / gen_cpu,
        "generate_us_per_image_cpu": gen_cpu / n * 1e6,
        "preprocess_us_per_image_cpu": pre_cpu / n * 1e6,
        "pipeline_images_per_s_wall": n / (gen_wall + pre_wall),
        "pipeline_images_per_s_cpu": n / (gen_cpu + pre_cpu),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="images per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is reported")
    args = parser.parse_args()
    results = measure(args.n, args.repeats)
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
