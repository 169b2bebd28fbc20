/* What the host harness's files share (host.c, host_grace.c): the CPU a
 * call runs as, and simulated CPUs entering and leaving the kernel. */
#ifndef KEEL_HOST_HARNESS_H
#define KEEL_HOST_HARNESS_H

#include <keel/types.h>

extern u32 host_cpu;
void host_enter(u32 cpu);
void host_leave(u32 cpu);

#endif
