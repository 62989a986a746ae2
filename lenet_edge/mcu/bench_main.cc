// The firmware `bench --on qemu:...` runs: the model classifies a block of digits read from the host over
// semihosting, and each digit's 10 int8 outputs and the SysTick ticks of its Invoke() go back the same way.
//
// digits.bin:  "LEDG", uint32 n, then n x kInputBytes int8 inputs (already quantized by the host).
// outputs.bin: per digit 10 int8 outputs, 2 bytes padding, uint32 SysTick ticks of Invoke().
// stdout:      "key value" lines (arena, stack, heap, the tick calibration), then "lenet-edge done N".
//
// SysTick counts the processor clock down from 2^24 - 1; under QEMU's -icount shift=0 the virtual clock
// advances 1 ns per instruction, so ticks are instructions x (clock / 1 GHz). The calibration loop runs a
// known number of instructions so the host turns ticks into instructions without assuming the clock.
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"

#include "bench_settings.h"  // kArenaSize
#include "lenet5_int8.h"
#include "micro_ops.h"

extern "C" uint32_t StackPeakBytes(void);
extern "C" char end;  // the linker script's start of the heap
extern "C" void* _sbrk(int increment);  // newlib's (librdimon)

namespace {
alignas(16) uint8_t tensor_arena[kArenaSize];

volatile uint32_t* const kSysTickCtrl = reinterpret_cast<volatile uint32_t*>(0xE000E010u);
volatile uint32_t* const kSysTickLoad = reinterpret_cast<volatile uint32_t*>(0xE000E014u);
volatile uint32_t* const kSysTickVal = reinterpret_cast<volatile uint32_t*>(0xE000E018u);
constexpr uint32_t kTickMask = 0xFFFFFFu;  // SysTick is a 24-bit down-counter
constexpr uint32_t kCalibrationLoops = 1000000;  // x 2 instructions (subs, bne)

void LogToStdout(const char* s) { fputs(s, stdout); }

inline uint32_t Ticks() { return *kSysTickVal; }
inline uint32_t Elapsed(uint32_t start, uint32_t stop) { return (start - stop) & kTickMask; }

uint32_t CalibrationTicks(uint32_t loops) {
  uint32_t start = Ticks();
  __asm__ volatile("1: subs %0, %0, #1\n bne 1b" : "+r"(loops) : : "cc");
  return Elapsed(start, Ticks());
}

int Fail(const char* what) {
  printf("lenet-edge error %s\n", what);
  return 1;
}
}  // namespace

int main() {
  RegisterDebugLogCallback(LogToStdout);
  *kSysTickLoad = kTickMask;
  *kSysTickVal = 0;
  *kSysTickCtrl = 0x5;  // enable, processor clock, no interrupt

  const tflite::Model* model = tflite::GetModel(lenet5_int8);
  if (model->version() != TFLITE_SCHEMA_VERSION) return Fail("model schema version");
  static LenetOpResolver resolver;
  if (RegisterLenetOps(resolver) != kTfLiteOk) return Fail("op registration");
  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, kArenaSize);
  if (interpreter.AllocateTensors() != kTfLiteOk) return Fail("AllocateTensors (arena too small?)");
  TfLiteTensor* input = interpreter.input(0);
  TfLiteTensor* output = interpreter.output(0);
  if (input->bytes != kInputBytes || output->bytes != kOutputBytes) return Fail("tensor sizes");
  printf("arena_size %d\narena_used %u\n", kArenaSize, static_cast<unsigned>(interpreter.arena_used_bytes()));

  FILE* in = fopen("digits.bin", "rb");
  FILE* out = fopen("outputs.bin", "wb");
  if (in == nullptr || out == nullptr) return Fail("cannot open digits.bin / outputs.bin");
  char magic[4];
  uint32_t n = 0;
  if (fread(magic, 1, 4, in) != 4 || memcmp(magic, "LEDG", 4) != 0 || fread(&n, 4, 1, in) != 1) {
    return Fail("digits.bin header");
  }
  for (uint32_t i = 0; i < n; ++i) {
    if (fread(input->data.int8, 1, kInputBytes, in) != kInputBytes) return Fail("digits.bin truncated");
    uint32_t start = Ticks();
    TfLiteStatus status = interpreter.Invoke();
    uint32_t ticks = Elapsed(start, Ticks());
    if (status != kTfLiteOk) return Fail("Invoke");
    uint8_t record[kOutputBytes + 2 + 4] = {0};
    memcpy(record, output->data.int8, kOutputBytes);
    memcpy(record + kOutputBytes + 2, &ticks, 4);
    if (fwrite(record, 1, sizeof(record), out) != sizeof(record)) return Fail("writing outputs.bin");
  }
  fclose(in);
  if (fclose(out) != 0) return Fail("closing outputs.bin");

  uint32_t empty = CalibrationTicks(1);
  printf("calibration_instructions %u\ncalibration_ticks %u\ncalibration_empty_ticks %u\n",
         static_cast<unsigned>(2 * kCalibrationLoops), static_cast<unsigned>(CalibrationTicks(kCalibrationLoops)),
         static_cast<unsigned>(empty));
  printf("stack_peak %u\nheap_used %u\n", static_cast<unsigned>(StackPeakBytes()),
         static_cast<unsigned>(static_cast<char*>(_sbrk(0)) - &end));
  printf("lenet-edge done %u\n", static_cast<unsigned>(n));
  return 0;
}
