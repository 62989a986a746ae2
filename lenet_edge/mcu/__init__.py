"""Firmware for an emulated Cortex-M: the int8 model, TensorFlow Lite Micro and a bench program, built and linked.

`build.py` compiles a TFLM source tree (only what the model needs) with Debian's
`arm-none-eabi` toolchain, caches the library, links the firmware and reads its
flash and RAM from the ELF and the map file. The C sources beside it
(`startup.c`, `bench_main.cc`, `mps2.ld`) are the firmware's own start-up code,
bench program and memory layout for QEMU's MPS2 boards.
"""
