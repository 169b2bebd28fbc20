/* The register frame trap_entry.S builds on the kernel stack. */
#ifndef TRAP_H
#define TRAP_H

#include <keel/types.h>

#include <arch/cpu.h>

#endif
