/* Start-up code for the Arm MPS2 boards QEMU emulates (mps2-an385 M3, mps2-an386 M4, mps2-an500 M7).
 *
 * A vector table with the reset and fault handlers; Reset_Handler enables the FPU (hard-float builds),
 * copies .data, zeroes .bss, paints the stack so main can measure its peak use, sets up newlib's
 * semihosting stdio, runs static constructors and calls exit(main()). A fault prints one line over
 * semihosting and stops the machine, so a crashed firmware is reported instead of hanging.
 */
#include <stdint.h>
#include <stdlib.h>

#define STACK_PAINT 0x5AA5C33Cu

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__;
extern uint32_t __StackLimit, __StackTop;
extern void initialise_monitor_handles(void);
extern int main(void);

typedef void (*init_fn)(void);
extern init_fn __preinit_array_start[], __preinit_array_end[], __init_array_start[], __init_array_end[];

void* __dso_handle = &__dso_handle; /* crtbegin.o's, for __cxa_atexit (not linked: -nostartfiles) */

/* One semihosting call (Arm's "bkpt 0xAB" convention, Thumb). */
static int semihost(int op, const void* arg) {
  register int r0 __asm__("r0") = op;
  register const void* r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

static void fault(const char* what) {
  semihost(0x04, what); /* SYS_WRITE0 */
  for (;;) semihost(0x18, (const void*)0x20023); /* SYS_EXIT, ADP_Stopped_RunTimeErrorUnknown */
}

void HardFault_Handler(void) { fault("lenet-edge: HARD FAULT\n"); }
void MemManage_Handler(void) { fault("lenet-edge: HARD FAULT (MemManage)\n"); }
void BusFault_Handler(void) { fault("lenet-edge: HARD FAULT (BusFault)\n"); }
void UsageFault_Handler(void) { fault("lenet-edge: HARD FAULT (UsageFault)\n"); }
void Default_Handler(void) { fault("lenet-edge: HARD FAULT (unexpected exception)\n"); }

/* The peak stack use so far: the painted words below the deepest write are still intact. */
uint32_t StackPeakBytes(void) {
  const uint32_t* p = &__StackLimit;
  while (p < &__StackTop && *p == STACK_PAINT) ++p;
  return (uint32_t)((uintptr_t)&__StackTop - (uintptr_t)p);
}

void Reset_Handler(void) __attribute__((noreturn));
void Reset_Handler(void) {
#if defined(__ARM_FP)
  *(volatile uint32_t*)0xE000ED88u |= 0xFu << 20; /* CPACR: full access to CP10/CP11 (the FPU) */
  __asm__ volatile("dsb\n isb" ::: "memory");
#endif
  for (uint32_t *src = &__data_load__, *dst = &__data_start__; dst < &__data_end__;) *dst++ = *src++;
  for (uint32_t* dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
  uint32_t sp;
  __asm__ volatile("mov %0, sp" : "=r"(sp));
  for (uint32_t* p = &__StackLimit; (uintptr_t)p < sp - 64; ++p) *p = STACK_PAINT;
  initialise_monitor_handles();
  for (init_fn* f = __preinit_array_start; f < __preinit_array_end; ++f) (*f)();
  for (init_fn* f = __init_array_start; f < __init_array_end; ++f) (*f)();
  exit(main());
}

/* Cortex-M vector table: initial stack pointer, then the exception handlers (no device interrupts used). */
__attribute__((section(".vectors"), used)) void (*const g_vectors[16])(void) = {
    (void (*)(void))&__StackTop, Reset_Handler, Default_Handler, HardFault_Handler,
    MemManage_Handler, BusFault_Handler, UsageFault_Handler, 0, 0, 0, 0,
    Default_Handler, Default_Handler, 0, Default_Handler, Default_Handler,
};
