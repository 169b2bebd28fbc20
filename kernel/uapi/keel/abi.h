/* Keel's user/kernel interface: what a user program may rely on.  The call
 * labels, error codes, object types and rights come from kernel/calls.tbl
 * through the generated <keel/abi_gen.h>. */
#ifndef KEEL_UAPI_ABI_H
#define KEEL_UAPI_ABI_H

#include <keel/abi_gen.h>

/* System call numbers (RAX).  Everything but the two measurement calls is a
 * message sent to a capability. */
#define KEEL_SYS_INVOKE 0 /* RDI = capability, RSI = label, 6 words: a call.
                           * On an endpoint the message goes to its server
                           * with a one-shot reply capability and the caller
                           * waits for the reply. */
#define KEEL_SYS_YIELD 1  /* give the CPU to another runnable thread */
#define KEEL_SYS_NULL 2   /* enters and leaves the kernel: the null call */
#define KEEL_SYS_FLOOR 3  /* returns from the entry stub: syscall/sysret floor */
#define KEEL_SYS_SEND 4   /* RDI = endpoint, RSI = label, 6 words; never blocks */
#define KEEL_SYS_RECV 5   /* RDI = endpoint, RSI = flags, RDX = window slot */
#define KEEL_SYS_REPLY 6  /* RDI = reply capability, RSI = error, 6 results */
#define KEEL_SYS_BATCH 7  /* RDI = records, RSI = count, RDX = flags */
#define KEEL_SYS_REPLY_RECV 8 /* a reply (RDI = reply capability, RSI = error,
                               * 6 results) then a blocking recv on R14 =
                               * endpoint, R15 = window: a server's loop in
                               * one trap.  A failed reply returns its error
                               * and receives nothing. */

/* A label's upper bits (user labels, which are >= KEEL_LABEL_USER):
 * bits 48-53 mark the words that are capability slots to transfer with the
 * message (at most 3); bit 56 on a send asks, when the queue is full, to be
 * told through the sender's bound notification (bit KEEL_ROOM_BIT) once
 * there is room.  Kernel call labels take their capability words from the
 * call table instead. */
#define KEEL_LABEL_USER 0x10000ul
#define KEEL_LABEL_MASK 0xfffffffful
#define KEEL_LABEL_CAPS(mask) ((unsigned long)(mask) << 48)
#define KEEL_SEND_NOTIFY_ROOM (1ul << 56)
#define KEEL_ROOM_BIT (1ul << 62)
#define KEEL_MSG_CAPS 3

/* Received messages: RAX error, RDI badge, RSI label, RDX..R13 the words,
 * RBX info.  Transferred capabilities land in the receive window: the reply
 * capability (for a call) in window+0, the others in window+1.. in order,
 * and the words that named them are rewritten to those slots. */
#define KEEL_INFO_REPLY 1           /* a reply capability is in window+0 */
#define KEEL_INFO_CAPS(info) (((info) >> 8) & 0xff)
#define KEEL_INFO_LOST 0x10000      /* capabilities dropped: window full */
#define KEEL_LABEL_NOTIFY 0xfffe    /* a bound notification: badge = bits */

/* Batches: an array of records, one call each.  Bit i of refs (i < 6) makes
 * arg[i] = result (arg[i] & 0xff) of record (arg[i] >> 8), an earlier one
 * (as that record holds it when this one runs); bit 6 does the same for
 * cap.  A call on an endpoint is sent, not called.  The kernel reads and
 * writes the records in place: all of them must be mapped writable, or
 * nothing runs (bad_address); if a record's call unmaps them, the batch
 * ends after it (bad_address, done counting it). */
#define KEEL_BATCH_STOP 1 /* stop at the first failure (the rest: not_run) */
#define KEEL_BATCH_MAX 64
#define KEEL_BATCH_REF(call, result) (((unsigned long)(call) << 8) | (result))
#define KEEL_REF_CAP 6

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
#define KEEL_SLOT_IRQ_CONTROL 5 /* makes interrupt handler capabilities */
#define KEEL_SLOT_IO_PORT_CONTROL 6 /* issues I/O-port ranges */
#define KEEL_SLOT_IO_SPACE_CONTROL 7 /* issues a device's DMA space (io_space) */
#define KEEL_SLOT_FIRST_UNTYPED 16

/* recv flags */
#define KEEL_RECV_NONBLOCK 1

/* Label of a fault message: w0 = vector, w1 = fault address, w2 = error
 * code, w3 = instruction pointer; the badge is the fault endpoint's. */
#define KEEL_LABEL_FAULT 0xfa17

/* tcb_state results */
#define KEEL_THREAD_INACTIVE 0
#define KEEL_THREAD_RUNNABLE 1
#define KEEL_THREAD_BLOCKED 2
#define KEEL_THREAD_FAULTED 3

/* tcb_set_priority, tcb_set_mcp: 0..KEEL_PRIO_TOP, higher runs first; a
 * new thread runs at KEEL_PRIO_DEFAULT with a ceiling (MCP) of 0. */
#define KEEL_PRIO_TOP 255
#define KEEL_PRIO_DEFAULT 128

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
#define KEEL_MAX_DEVICES 16

#ifndef __ASSEMBLY__
/* 128 bytes, aligned to 128 so that no record of an array straddles a
 * page (the kernel reads and writes records in place; one that straddles
 * costs it a copy each way). */
struct keel_call_rec {
    unsigned long cap, label, refs, arg[6];
    unsigned long err, res[6];
} __attribute__((aligned(128)));

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
    char cmdline[1024];        /* all of it: the VMM announces every virtio slot */
    struct keel_untyped_desc untyped[KEEL_MAX_UNTYPED];
    /* Devices announced on the command line, the virtio_mmio.device=
     * entries in order (or, when there are none, the LNRO0005 devices of
     * the firmware's DSDT), then the keel.hotplug= controller (docs/hotplug.md):
     * a device-memory untyped capability (4 KiB) for each, and its
     * interrupt line. */
    unsigned long device_count;
    struct keel_device_desc {
        unsigned long paddr, size, irq, slot;
    } devices[KEEL_MAX_DEVICES];
};
#endif

#endif
