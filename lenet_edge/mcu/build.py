"""Build Cortex-M firmware for a model: TFLM compiled from a source tree, cached, linked, measured.

The tree is one `create_tflm_tree.py` generated for CMSIS-NN (as TFLM's own
project generation writes it: `tensorflow/`, `third_party/`), with the portable
reference versions of the CMSIS-NN kernels in `reference_kernels/` for a
reference-kernel build. Only what the model needs is compiled:

1. TFLM's core (interpreter, allocator, planners, flatbuffer bridge, the
   `tensorflow/lite` and `tensorflow/compiler` sources it includes);
2. the kernel files that define the registrations the op resolver calls (read
   from the tree's `micro_mutable_op_resolver.h`: `AddConv2D` ->
   `Register_CONV_2D`), their `*_common.cc` and the kernels' shared
   utilities; CMSIS-NN's own version where the tree has one (or
   `reference_kernels/`'s);
3. for CMSIS-NN, the CMSIS-NN functions those objects call, found by their
   undefined `arm_*` symbols and CMSIS-NN's one-function-per-file layout,
   repeated until nothing is missing.

The objects go into `libtflm.a` in a cache directory whose name is a hash of
the tree's sources, the compiler, the flags and the sources chosen, so a second
build of the same library only links. The firmware itself (the model array,
the op resolver, the program, `startup.c`, `mps2.ld`) is compiled in the build
directory and linked with newlib-nano and semihosting (`rdimon`).

`image_figures` reads the linked ELF: flash = every section loaded from flash
(vectors, text, rodata, exception index, the initial values of data), split by
the map file into the model array, TFLM (library objects: runtime and kernels,
CMSIS-NN included) and the application (the rest: start-up, program, C
library); RAM = data + bss (the arena shown apart) + the heap and stack the
program reported using.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import LenetEdgeError

INSTALL = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib"
TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-g++", "arm-none-eabi-ar", "arm-none-eabi-nm", "arm-none-eabi-size")
KERNEL_SETS = ("cmsis-nn", "reference")
SOURCES = ("startup.c", "bench_main.cc", "mps2.ld")  # beside this module
OPT = "-Os"


class BuildError(LenetEdgeError):
    """The firmware could not be built: no toolchain, no tree, a compile or link error (one line)."""


@dataclass(frozen=True)
class Core:
    """A Cortex-M core: its compiler flags and the QEMU board that runs it."""

    name: str  # as in --on qemu:NAME
    machine: str  # qemu-system-arm -M
    flags: tuple[str, ...]


CORES = {
    core.name: core
    for core in (
        Core("cortex-m3", "mps2-an385", ("-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft")),
        Core("cortex-m4", "mps2-an386", ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")),
        Core("cortex-m7", "mps2-an500", ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16")),
    )
}

DEFINES = ("-DTF_LITE_STATIC_MEMORY", "-DTF_LITE_DISABLE_X86_NEON", "-DTF_LITE_MCU_DEBUG_LOG")
CMSIS_DEFINES = ("-DCMSIS_NN", "-DARM_NN_ENABLE_F16=0", "-DARM_NN_ENABLE_F32=0")
INCLUDES = (
    ".",
    "third_party/gemmlowp",
    "third_party/flatbuffers/include",
    "third_party/ruy",
    "third_party/cmsis",
    "third_party/cmsis/CMSIS/Core/Include",
    "third_party/cmsis_nn",
    "third_party/cmsis_nn/Include",
)
COMMON = (
    "-ffunction-sections",
    "-fdata-sections",
    "-fno-unwind-tables",
    "-fno-asynchronous-unwind-tables",
    "-fsigned-char",
    "-fomit-frame-pointer",
    "-fmessage-length=0",
)
CXX_FLAGS = ("-std=c++17", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics")
C_FLAGS = ("-std=c17",)

KERNELS = "tensorflow/lite/micro/kernels"
CMSIS_NN_SOURCE = "third_party/cmsis_nn/Source"
REFERENCE_DIR = "reference_kernels"
# Core sources that tests, tools or a device's own clock use, never the interpreter on its own.
CORE_SKIP = {
    "test_helpers.cc",
    "test_helper_custom_ops.cc",
    "mock_micro_graph.cc",
    "fake_micro_context.cc",
    "micro_time.cc",  # cortex_m_generic's reads the DWT through a device header; nothing here uses the clock
}
KERNEL_SKIP = {"kernel_runner.cc", "lstm_eval.cc", "lstm_eval_common.cc"}
_REGISTRATION = re.compile(r"^TFLMRegistration\*?\s+(Register_\w+)\s*\(", re.M)
_RESOLVER_METHOD = re.compile(
    r"TfLiteStatus\s+(Add\w+)\(\s*const TFLMRegistration& registration\s*=\s*(Register_\w+)\("
)


@dataclass(frozen=True)
class Toolchain:
    gcc: str
    gxx: str
    ar: str
    nm: str
    size: str
    version: str


def find_toolchain() -> Toolchain:
    """The arm-none-eabi tools on PATH, with newlib (C library and semihosting).

    Raises:
        BuildError: a tool or newlib missing, naming the command that installs it.
    """
    found = {tool: shutil.which(tool) for tool in TOOLS}
    missing = [tool for tool, path in found.items() if path is None]
    if missing:
        raise BuildError(f"no {', '.join(missing)} on PATH: {INSTALL}")
    gcc = found["arm-none-eabi-gcc"]
    probe = subprocess.run([gcc, "-print-file-name=librdimon.a"], capture_output=True, text=True)
    if probe.returncode != 0 or not os.path.isabs(probe.stdout.strip()):
        raise BuildError(f"arm-none-eabi-gcc has no newlib (librdimon.a): {INSTALL}")
    probe = subprocess.run([found["arm-none-eabi-g++"], "-print-file-name=libstdc++.a"], capture_output=True, text=True)
    if not os.path.isabs(probe.stdout.strip()):
        raise BuildError(f"arm-none-eabi-g++ has no libstdc++: {INSTALL}")
    version = subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return Toolchain(
        gcc,
        found["arm-none-eabi-g++"],
        found["arm-none-eabi-ar"],
        found["arm-none-eabi-nm"],
        found["arm-none-eabi-size"],
        version,
    )


def check_tree(tree: Path | None, kernels: str) -> Path:
    """`tree` as a TFLM source tree that builds `kernels`.

    Raises:
        BuildError: no tree given, not a TFLM tree, or without CMSIS-NN / reference kernels (says what to get).
    """
    if tree is None:
        raise BuildError(
            "no TensorFlow Lite Micro tree: give --tflm DIR or set TFLM_DIR (a tree generated by "
            "tflite-micro's create_tflm_tree.py with OPTIMIZED_KERNEL_DIR=cmsis_nn)"
        )
    tree = Path(tree)
    if not (tree / "tensorflow/lite/micro/micro_interpreter.h").is_file():
        raise BuildError(f"{tree}: not a TensorFlow Lite Micro tree (no tensorflow/lite/micro/micro_interpreter.h)")
    if kernels == "cmsis-nn" and not (
        (tree / KERNELS / "cmsis_nn").is_dir() and (tree / "third_party/cmsis_nn/Include/arm_nnfunctions.h").is_file()
    ):
        raise BuildError(
            f"{tree}: no CMSIS-NN (kernels/cmsis_nn/ and third_party/cmsis_nn/): generate the tree with "
            'create_tflm_tree.py --makefile_options="OPTIMIZED_KERNEL_DIR=cmsis_nn ..."'
        )
    if kernels == "reference" and not (tree / REFERENCE_DIR).is_dir() and (tree / KERNELS / "cmsis_nn").is_dir():
        raise BuildError(
            f"{tree}: no {REFERENCE_DIR}/ with the portable versions of the CMSIS-NN kernels "
            "(copy them from tflite-micro's tensorflow/lite/micro/kernels/ at the tree's commit)"
        )
    return tree


def registrations(tree: Path, methods: list[str]) -> list[str]:
    """The `Register_*` functions the resolver's `Add*` methods call, read from the tree's resolver header.

    Raises:
        BuildError: a method this TFLM's resolver does not have.
    """
    header = (tree / "tensorflow/lite/micro/micro_mutable_op_resolver.h").read_text()
    table = dict(_RESOLVER_METHOD.findall(header))
    missing = [m for m in methods if m not in table]
    if missing:
        raise BuildError(f"{tree}: this TFLM's MicroMutableOpResolver has no {', '.join(missing)}")
    return [table[m] for m in methods]


def library_sources(tree: Path, kernels: str, needed: list[str]) -> list[str]:
    """TFLM's core and the kernels defining `needed` registrations (paths relative to `tree`), CMSIS-NN aside."""
    core = []
    for pattern in (
        "tensorflow/lite/micro/*.cc",
        "tensorflow/lite/micro/arena_allocator/*.cc",
        "tensorflow/lite/micro/memory_planner/*.cc",
        "tensorflow/lite/micro/tflite_bridge/*.cc",
        "tensorflow/lite/micro/cortex_m_generic/*.cc",
        "tensorflow/lite/core/**/*.cc",
        "tensorflow/lite/kernels/**/*.cc",
        "tensorflow/compiler/**/*.cc",
    ):
        core += [p for p in tree.glob(pattern) if p.name not in CORE_SKIP and not p.name.endswith("_test.cc")]
    optimized = {p.name: p for p in (tree / KERNELS / "cmsis_nn").glob("*.cc")} if kernels == "cmsis-nn" else {}
    if kernels == "reference":
        optimized = {p.name: p for p in (tree / REFERENCE_DIR).glob("*.cc")}
    files = {p.name: p for p in (tree / KERNELS).glob("*.cc") if p.name not in KERNEL_SKIP}
    files.update(optimized)  # the optimized (or reference) version replaces the generic file of that name
    defines = {name: set(_REGISTRATION.findall(path.read_text(errors="replace"))) for name, path in files.items()}
    wanted = set(needed)
    chosen = {name for name, regs in defines.items() if regs & wanted}
    found = set().union(*(defines[name] for name in chosen)) if chosen else set()
    if not wanted <= found:
        raise BuildError(f"{tree}: no kernel source defines {', '.join(sorted(wanted - found))}")
    stems = {name[:-3] for name in chosen}
    has_kernel = {name[:-3] for name, regs in defines.items() if regs}
    for name, regs in defines.items():
        stem = name[:-3].removesuffix("_common")
        if not regs and (stem in stems or stem not in has_kernel):  # a kernel's common part, or shared utility
            chosen.add(name)
    kernel_paths = [files[name] for name in sorted(chosen)]
    return sorted(str(p.relative_to(tree)) for p in core + kernel_paths)


def compile_flags(tree: Path, core: Core, kernels: str) -> tuple[list[str], list[str]]:
    """(C flags, C++ flags) for `core` and `kernels`, include paths into `tree` included."""
    defines = DEFINES + (CMSIS_DEFINES if kernels == "cmsis-nn" else ())
    includes = [f"-I{tree / inc}" for inc in INCLUDES]
    common = [*core.flags, OPT, *defines, *COMMON, *includes]
    return [*C_FLAGS, *common], [*CXX_FLAGS, *common]


def _compile(tools: Toolchain, src: Path, obj: Path, cflags: list[str], cxxflags: list[str]) -> None:
    compiler, flags = (tools.gcc, cflags) if src.suffix == ".c" else (tools.gxx, cxxflags)
    done = subprocess.run([compiler, *flags, "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines() or ["?"]
        raise BuildError(f"compiling {src.name} failed: {errors[0].strip()}")


def _compile_all(tools, pairs, cflags, cxxflags, jobs: int) -> None:
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for future in [pool.submit(_compile, tools, src, obj, cflags, cxxflags) for src, obj in pairs]:
            future.result()


def _object_name(rel: str) -> str:
    return rel.replace("/", "_").rsplit(".", 1)[0] + ".o"


def _undefined(tools: Toolchain, objects: list[Path]) -> set[str]:
    out = subprocess.run(
        [tools.nm, "--undefined-only", "--format=posix", *map(str, objects)], capture_output=True, text=True, check=True
    ).stdout
    defined = subprocess.run(
        [tools.nm, "--defined-only", "--format=posix", *map(str, objects)], capture_output=True, text=True, check=True
    ).stdout
    names = {line.split()[0] for line in out.splitlines() if line and not line.endswith(":")}
    have = {line.split()[0] for line in defined.splitlines() if line and not line.endswith(":")}
    return names - have


_C_DEFINITION = re.compile(r"^[A-Za-z_][\w \t\*]*?\b(arm_\w+)\s*\(", re.M)


def cmsis_nn_functions(tree: Path) -> dict[str, Path]:
    """CMSIS-NN function name -> the source defining it (a definition starts a line; prototypes end in `;`)."""
    found = {}
    for path in sorted((tree / CMSIS_NN_SOURCE).rglob("*.c")):
        if path.name.endswith(("_f16.c", "_f32.c")) or path.name == "arm_nntables_flt.c":
            continue
        text = path.read_text(errors="replace")
        for match in _C_DEFINITION.finditer(text):
            rest = text[match.end() : text.find(")", match.end()) + 2]
            if not rest.rstrip().endswith(";"):
                found.setdefault(match.group(1), path)
        found.setdefault(path.stem, path)
    return found


def tree_digest(tree: Path) -> str:
    """sha256 over the tree's source and header files (path and content): a changed tree is another cache key."""
    digest = hashlib.sha256()
    for path in sorted(tree.rglob("*")):
        if path.suffix in (".c", ".cc", ".h", ".hpp", ".inc") and path.is_file():
            digest.update(str(path.relative_to(tree)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Library:
    """A built (or cached) TFLM library for one core, kernel set and op set."""

    archive: Path
    sources: tuple[str, ...]
    cached: bool
    build_s: float  # seconds the library took to compile (when it was built; 0 if it came from the cache)
    key: str


def build_library(
    tree: Path,
    core: Core,
    kernels: str,
    methods: list[str],
    cache_dir: Path,
    tools: Toolchain,
    jobs: int = 2,
    say=lambda m: None,
) -> Library:
    """libtflm.a with what `methods` (resolver `Add*` calls) need, from the cache or compiled into it."""
    needed = registrations(tree, methods)
    sources = library_sources(tree, kernels, needed)
    cflags, cxxflags = compile_flags(tree, core, kernels)
    key_text = json.dumps([tree_digest(tree), tools.version, cflags, cxxflags, kernels, sources])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:20]
    home = cache_dir / f"{core.name}-{kernels}-{key}"
    archive = home / "libtflm.a"
    if (home / "library.json").is_file() and archive.is_file():
        recorded = json.loads((home / "library.json").read_text())
        return Library(archive, tuple(recorded["sources"]), True, recorded["build_s"], key)
    say(f"compiling TFLM for {core.name} ({kernels}): {len(sources)} sources, -j{jobs} (cached afterwards)")
    work = cache_dir / f".building-{os.getpid()}-{key}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "obj").mkdir(parents=True)
    start = time.monotonic()
    try:
        pairs = [(tree / rel, work / "obj" / _object_name(rel)) for rel in sources]
        _compile_all(tools, pairs, cflags, cxxflags, jobs)
        if kernels == "cmsis-nn":  # the CMSIS-NN functions the kernels call, then the ones those call
            by_name = cmsis_nn_functions(tree)
            chosen: set[str] = set()
            while True:
                missing = {s for s in _undefined(tools, [obj for _, obj in pairs]) if s in by_name} - chosen
                if not missing:
                    break
                chosen |= missing
                new = [(by_name[s], work / "obj" / _object_name(str(by_name[s].relative_to(tree)))) for s in missing]
                _compile_all(tools, new, cflags, cxxflags, jobs)
                pairs += new
                sources += [str(by_name[s].relative_to(tree)) for s in sorted(missing)]
        subprocess.run([tools.ar, "rcs", str(work / "libtflm.a"), *(str(obj) for _, obj in pairs)], check=True)
        build_s = time.monotonic() - start
        (work / "library.json").write_text(json.dumps({"sources": sources, "build_s": build_s, "flags": cxxflags}))
        shutil.rmtree(work / "obj")
        if home.exists():  # another process built it meanwhile
            shutil.rmtree(work)
        else:
            os.replace(work, home)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Library(archive, tuple(sources), False, build_s, key)


def source_file(name: str) -> str:
    """The text of one of the firmware's own sources (`SOURCES`)."""
    return resources.files(__package__).joinpath(name).read_text()


def build_firmware(
    build_dir: Path,
    tree: Path,
    core: Core,
    kernels: str,
    library: Library,
    tools: Toolchain,
    files: dict[str, str],
    jobs: int = 2,
) -> Path:
    """Compile the program files (`name -> text`, written into `build_dir`) and link `app.elf` with `library`.

    Raises:
        BuildError: a compile or link error (its first line).
    """
    build_dir.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        (build_dir / name).write_text(source_file(name))
    for name, text in files.items():
        (build_dir / name).write_text(text)
    cflags, cxxflags = compile_flags(tree, core, kernels)
    cxxflags = [*cxxflags, f"-I{build_dir}"]
    sources = [build_dir / n for n in ("startup.c", "bench_main.cc", *(n for n in files if n.endswith(".cc")))]
    pairs = [(src, build_dir / (src.stem + ".o")) for src in sources]
    _compile_all(tools, pairs, cflags, cxxflags, jobs)
    elf = build_dir / "app.elf"
    link = [
        tools.gxx,
        *core.flags,
        "-T",
        str(build_dir / "mps2.ld"),
        "-nostartfiles",
        "--specs=nano.specs",
        "--specs=rdimon.specs",
        "-Wl,--gc-sections",
        f"-Wl,-Map={build_dir / 'app.map'}",
        *(str(obj) for _, obj in pairs),
        str(library.archive),
        "-lm",
        "-o",
        str(elf),
    ]
    done = subprocess.run(link, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if "undefined reference" in line or "error" in line]
        raise BuildError(f"linking {core.name} ({kernels}) failed: {(lines or done.stderr.splitlines() or ['?'])[0]}")
    return elf


# --- figures from the ELF and the map ------------------------------------------------------------------

FLASH_SECTIONS = (".vectors", ".text", ".rodata", ".ARM.exidx", ".data")  # .data: its initial values
RAM_SECTIONS = (".data", ".bss")
_MAP_ENTRY = re.compile(r"^ (\S+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$")
_MAP_CONTINUED = re.compile(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$")


def section_sizes(tools: Toolchain, elf: Path) -> dict[str, int]:
    """`arm-none-eabi-size -A`: section name -> bytes."""
    out = subprocess.run([tools.size, "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def map_contributions(map_text: str) -> list[tuple[str, int, str]]:
    """(output section, bytes, input file) for every input section the map places, in memory order."""
    entries, output, pending = [], None, None
    for line in map_text.splitlines():
        if line.startswith("."):
            output = line.split()[0]
            pending = None
            continue
        match = _MAP_ENTRY.match(line)
        if match and output:
            if int(match.group(2), 16):
                entries.append((output, int(match.group(3), 16), match.group(4).strip()))
            pending = None
            continue
        if line.startswith(" .") and len(line.split()) == 1:  # a long section name; address, size, file follow
            pending = line.strip()
            continue
        match = _MAP_CONTINUED.match(line)
        if match and pending and output and int(match.group(1), 16):
            entries.append((output, int(match.group(2), 16), match.group(3).strip()))
        pending = None
    return entries


def symbol_size(tools: Toolchain, elf: Path, name: str) -> int:
    """Bytes of the symbol `name` in `elf` (0 if absent)."""
    out = subprocess.run([tools.nm, "-S", "--format=posix", str(elf)], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] == name:
            return int(parts[3], 16)
    return 0


def image_figures(tools: Toolchain, elf: Path, model_object: str, library: Library, arena_symbol: str) -> dict:
    """Flash and RAM of the linked image: totals per section and the flash split model / TFLM / application."""
    sizes = section_sizes(tools, elf)
    flash = sum(sizes.get(s, 0) for s in FLASH_SECTIONS)
    entries = map_contributions(elf.with_suffix(".map").read_text())
    in_flash = [(size, source) for output, size, source in entries if output in FLASH_SECTIONS]
    model = sum(size for size, source in in_flash if source.endswith(model_object))
    tflm = sum(size for size, source in in_flash if source.startswith(str(library.archive)))
    arena = symbol_size(tools, elf, arena_symbol)
    return {
        "sections_bytes": sizes,
        "flash_bytes": flash,
        "flash_model_bytes": model,
        "flash_tflm_bytes": tflm,
        "flash_application_bytes": flash - model - tflm,
        "data_bytes": sizes.get(".data", 0),
        "bss_bytes": sizes.get(".bss", 0),
        "arena_bytes": arena,
        "heap_reserved_bytes": sizes.get(".heap", 0),
        "stack_reserved_bytes": sizes.get(".stack", 0),
    }
