/* Keel's user/kernel interface: what a user program may rely on.  The call
 * labels, error codes, object types and rights come from kernel/calls.tbl
 * through the generated <keel/abi_gen.h>. */
#ifndef KEEL_UAPI_ABI_H
#define KEEL_UAPI_ABI_H

#include <keel/abi_gen.h>

/* System call numbers (RAX).  Everything but the two measurement calls is a
 * message sent to a capability. */
#define KEEL_SYS_INVOKE 0 /* RDI = capability slot, RSI = label, 6 words */
#define KEEL_SYS_YIELD 1  /* give the CPU to another runnable thread */
#define KEEL_SYS_NULL 2   /* enters and leaves the kernel: the null call */
#define KEEL_SYS_FLOOR 3  /* returns from the entry stub: syscall/sysret floor */

/* Registers: arguments 0-5 in RDX R10 R8 R9 R12 R13; on return RAX holds
 * the error and the same six registers the results.  RCX and R11 are
 * clobbered by the syscall instruction; everything else is preserved. */
#define KEEL_MSG_WORDS 6

/* Slots of the root task's capability table at boot. */
#define KEEL_SLOT_NULL 0
#define KEEL_SLOT_CNODE 1   /* its own capability table */
#define KEEL_SLOT_VSPACE 2  /* its own address space */
#define KEEL_SLOT_TCB 3     /* its own thread */
#define KEEL_SLOT_CONSOLE 4 /* the kernel debug console */
#define KEEL_SLOT_FIRST_UNTYPED 16

/* endpoint_recv flags */
#define KEEL_RECV_NONBLOCK 1

/* Label of a fault message: w0 = vector, w1 = fault address, w2 = error
 * code, w3 = instruction pointer; the badge is the fault endpoint's. */
#define KEEL_LABEL_FAULT 0xfa17

/* tcb_state results */
#define KEEL_THREAD_INACTIVE 0
#define KEEL_THREAD_RUNNABLE 1
#define KEEL_THREAD_BLOCKED 2
#define KEEL_THREAD_FAULTED 3

/* vspace_lookup flags */
#define KEEL_MAP_PRESENT 1
#define KEEL_MAP_WRITE 2
#define KEEL_MAP_EXEC 4

/* The root task's address space at start-up. */
#define KEEL_USER_TOP 0x0000800000000000ul /* user addresses lie below */
#define KEEL_BOOTINFO_VADDR 0x7fff00000000ul
#define KEEL_INITRD_VADDR 0x7ffe00000000ul
#define KEEL_STACK_TOP 0x7ffd00000000ul
#define KEEL_STACK_PAGES 16
#define KEEL_PAGE_SIZE 4096ul

#define KEEL_BOOTINFO_MAGIC 0x6b65656c626f6f74ul /* "keelboot" */
#define KEEL_MAX_UNTYPED 128

#ifndef __ASSEMBLY__
struct keel_untyped_desc {
    unsigned long paddr;
    unsigned long size_bits;
};

/* Mapped read-only at KEEL_BOOTINFO_VADDR in the root task. */
struct keel_bootinfo {
    unsigned long magic;
    unsigned long cnode_bits;  /* the root capability table has 2^bits slots */
    unsigned long first_free;  /* first empty slot after the untyped ones */
    unsigned long untyped_count;
    unsigned long ncpus;
    unsigned long initrd_size; /* the initrd is mapped at KEEL_INITRD_VADDR */
    char cmdline[256];
    struct keel_untyped_desc untyped[KEEL_MAX_UNTYPED];
};
#endif

#endif
