"""Build the KVM bindings from the system's <linux/kvm.h>.

Run at build time (``python -m vmm.kvm.ffi_build``, done by ``make``): cffi
compiles a small extension against the real header, so every struct offset and
ioctl number below comes from the compiler, never from a hand-copied table.
The declarations use ``...`` so cffi asks the compiler for the true layout and
refuses to build if a named field does not exist.  Nothing here runs when the
VMM starts; the VMM imports the compiled ``vmm.kvm._kvm`` module.
"""

from __future__ import annotations

import pathlib
import shutil

import cffi

from vmm.kvm.ffi_state import CDEF_STATE

CDEF = """
/* ioctl numbers and constants: values are taken from the header. */
#define KVMIO ...
#define KVM_API_VERSION ...
#define KVM_GET_API_VERSION ...
#define KVM_CREATE_VM ...
#define KVM_CHECK_EXTENSION ...
#define KVM_GET_VCPU_MMAP_SIZE ...
#define KVM_GET_SUPPORTED_CPUID ...
#define KVM_CREATE_VCPU ...
#define KVM_SET_USER_MEMORY_REGION ...
#define KVM_SET_TSS_ADDR ...
#define KVM_SET_IDENTITY_MAP_ADDR ...
#define KVM_CREATE_IRQCHIP ...
#define KVM_CREATE_PIT2 ...
#define KVM_REINJECT_CONTROL ...
#define KVM_IRQ_LINE ...
#define KVM_IRQFD ...
#define KVM_IOEVENTFD ...
#define KVM_RUN ...
#define KVM_GET_REGS ...
#define KVM_SET_REGS ...
#define KVM_GET_SREGS ...
#define KVM_SET_SREGS ...
#define KVM_SET_CPUID2 ...
#define KVM_GET_MP_STATE ...
#define KVM_SET_MP_STATE ...
#define KVM_GET_LAPIC ...
#define KVM_SET_LAPIC ...
#define KVM_GET_TSC_KHZ ...

#define KVM_CAP_IRQCHIP ...
#define KVM_CAP_USER_MEMORY ...
#define KVM_CAP_SET_TSS_ADDR ...
#define KVM_CAP_PIT2 ...
#define KVM_CAP_EXT_CPUID ...
#define KVM_CAP_IMMEDIATE_EXIT ...
#define KVM_CAP_IOEVENTFD ...
#define KVM_CAP_IRQFD ...
#define KVM_CAP_NR_VCPUS ...
#define KVM_CAP_MAX_VCPUS ...

#define KVM_PIT_SPEAKER_DUMMY ...
#define KVM_MP_STATE_RUNNABLE ...
#define KVM_MP_STATE_UNINITIALIZED ...
#define KVM_MP_STATE_INIT_RECEIVED ...
#define KVM_MP_STATE_HALTED ...
#define KVM_MP_STATE_SIPI_RECEIVED ...

#define KVM_EXIT_UNKNOWN ...
#define KVM_EXIT_EXCEPTION ...
#define KVM_EXIT_IO ...
#define KVM_EXIT_HYPERCALL ...
#define KVM_EXIT_DEBUG ...
#define KVM_EXIT_HLT ...
#define KVM_EXIT_MMIO ...
#define KVM_EXIT_IRQ_WINDOW_OPEN ...
#define KVM_EXIT_SHUTDOWN ...
#define KVM_EXIT_FAIL_ENTRY ...
#define KVM_EXIT_INTR ...
#define KVM_EXIT_NMI ...
#define KVM_EXIT_INTERNAL_ERROR ...
#define KVM_EXIT_SYSTEM_EVENT ...
#define KVM_EXIT_IO_IN ...
#define KVM_EXIT_IO_OUT ...
#define KVM_SYSTEM_EVENT_SHUTDOWN ...
#define KVM_SYSTEM_EVENT_RESET ...
#define KVM_SYSTEM_EVENT_CRASH ...
#define KVM_INTERNAL_ERROR_EMULATION ...
#define KVM_INTERNAL_ERROR_SIMUL_EX ...
#define KVM_INTERNAL_ERROR_DELIVERY_EV ...

#define KVM_IOEVENTFD_FLAG_DATAMATCH ...
#define KVM_IOEVENTFD_FLAG_PIO ...
#define KVM_IOEVENTFD_FLAG_DEASSIGN ...
#define KVM_IRQFD_FLAG_DEASSIGN ...

struct kvm_userspace_memory_region {
    uint32_t slot;
    uint32_t flags;
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    ...;
};

struct kvm_pit_config { uint32_t flags; ...; };
struct kvm_reinject_control { uint8_t pit_reinject; ...; };
struct kvm_irq_level { uint32_t irq; uint32_t level; ...; };
struct kvm_mp_state { uint32_t mp_state; ...; };
struct kvm_lapic_state { char regs[...]; ...; };

struct kvm_irqfd { uint32_t fd; uint32_t gsi; uint32_t flags; uint32_t resamplefd; ...; };
struct kvm_ioeventfd {
    uint64_t datamatch;
    uint64_t addr;
    uint32_t len;
    int32_t fd;
    uint32_t flags;
    ...;
};

struct kvm_regs {
    uint64_t rax, rbx, rcx, rdx;
    uint64_t rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11;
    uint64_t r12, r13, r14, r15;
    uint64_t rip, rflags;
    ...;
};

struct kvm_segment {
    uint64_t base;
    uint32_t limit;
    uint16_t selector;
    uint8_t type;
    uint8_t present, dpl, db, s, l, g, avl;
    uint8_t unusable;
    ...;
};

struct kvm_dtable { uint64_t base; uint16_t limit; ...; };

struct kvm_sregs {
    struct kvm_segment cs, ds, es, fs, gs, ss;
    struct kvm_segment tr, ldt;
    struct kvm_dtable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, cr8;
    uint64_t efer;
    uint64_t apic_base;
    unsigned long long interrupt_bitmap[...];
    ...;
};

struct kvm_cpuid_entry2 {
    uint32_t function;
    uint32_t index;
    uint32_t flags;
    uint32_t eax;
    uint32_t ebx;
    uint32_t ecx;
    uint32_t edx;
    ...;
};

struct kvm_cpuid2 {
    uint32_t nent;
    struct kvm_cpuid_entry2 entries[];
    ...;
};

/* The exit-reason structs are anonymous in the header; SOURCE names them
   with __typeof__ so cffi can check each one's layout against the compiler. */
typedef struct { uint64_t hardware_exit_reason; ...; } kvm_exit_hw_t;
typedef struct { uint64_t hardware_entry_failure_reason; uint32_t cpu; ...; } kvm_exit_fail_entry_t;
typedef struct { uint32_t exception; uint32_t error_code; ...; } kvm_exit_ex_t;
typedef struct { uint8_t direction; uint8_t size; uint16_t port; uint32_t count;
                 uint64_t data_offset; ...; } kvm_exit_io_t;
typedef struct { uint64_t phys_addr; uint8_t data[8]; uint32_t len; uint8_t is_write;
                 ...; } kvm_exit_mmio_t;
typedef struct { uint32_t suberror; uint32_t ndata; unsigned long long data[16];
                 ...; } kvm_exit_internal_t;
typedef struct { uint32_t type; uint32_t ndata; unsigned long long data[16];
                 ...; } kvm_exit_system_event_t;

struct kvm_run {
    uint8_t request_interrupt_window;
    uint8_t immediate_exit;
    uint32_t exit_reason;
    uint8_t ready_for_interrupt_injection;
    uint8_t if_flag;
    uint16_t flags;
    uint64_t cr8;
    uint64_t apic_base;
    union {
        kvm_exit_hw_t hw;
        kvm_exit_fail_entry_t fail_entry;
        kvm_exit_ex_t ex;
        kvm_exit_io_t io;
        kvm_exit_mmio_t mmio;
        kvm_exit_internal_t internal;
        kvm_exit_system_event_t system_event;
    };
    ...;
};

int ioctl(int fd, unsigned long request, ...);

/* See SOURCE: a do-nothing signal handler used to kick vCPU threads. */
int keel_install_kick_handler(int signo);

/* See SOURCE: attach to a TAP interface (virtio-net's backend). */
#define TUNSETIFF ...
#define IFF_TAP ...
#define IFF_NO_PI ...
#define IFNAMSIZ ...
int keel_tap_open(const char *name);

/* Start write-out of a file's dirty pages without waiting (virtio-blk's
   background writeback, vmm.devices.virtio.blk); Python has no binding. */
#define SYNC_FILE_RANGE_WRITE ...
int sync_file_range(int fd, int64_t offset, int64_t nbytes, unsigned int flags);

/* See blkfast.c: virtio-blk's usual request served in C. */
struct keel_blk_req {
    uint32_t head, data_write, data_len, pad;
    uint64_t hdr, data, status;
    uint64_t hdr_host, data_host, status_host;
};
struct keel_blk_queue {
    uint64_t table, avail, used;
    uint32_t size, next_avail, used_idx;
    int32_t nram;
    const uint64_t *ram;
    int32_t nrd, nwr;
    const uint64_t *rd_starts, *rd_ends, *wr_starts, *wr_ends;
    int32_t fd, readonly;
    uint64_t capacity;
    uint64_t bytes;
    uint32_t requests, errors, wrote;
};
int keel_blk_parse(const struct keel_blk_queue *q, struct keel_blk_req *out);
int keel_blk_serve(struct keel_blk_queue *q, const struct keel_blk_req *reqs, int from, int n);
"""

SOURCE = """
#include <sys/ioctl.h>
#include <linux/kvm.h>

#define KVM_EXIT_TYPE(field) __typeof__(((struct kvm_run *)0)->field)
typedef KVM_EXIT_TYPE(hw) kvm_exit_hw_t;
typedef KVM_EXIT_TYPE(fail_entry) kvm_exit_fail_entry_t;
typedef KVM_EXIT_TYPE(ex) kvm_exit_ex_t;
typedef KVM_EXIT_TYPE(io) kvm_exit_io_t;
typedef KVM_EXIT_TYPE(mmio) kvm_exit_mmio_t;
typedef KVM_EXIT_TYPE(internal) kvm_exit_internal_t;
typedef KVM_EXIT_TYPE(system_event) kvm_exit_system_event_t;

#include <signal.h>
#include <string.h>

/* A signal sent to a vCPU thread makes KVM_RUN return EINTR.  The handler
   must exist (the default action would kill the process) and must not
   restart the ioctl.  Installed from C so it works from any Python thread
   and never waits for the interpreter's main-thread signal machinery. */
static void keel_kick_handler(int signo) { (void)signo; }

static int keel_install_kick_handler(int signo)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = keel_kick_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    return sigaction(signo, &sa, NULL);
}

#include <errno.h>
#include <fcntl.h> /* (sync_file_range: Python.h defined _GNU_SOURCE) */
#include <unistd.h>
#include <net/if.h>
#include <linux/if_tun.h>

/* Open /dev/net/tun and attach it to TAP interface `name` (created if it
   does not exist), without packet information: frames are plain Ethernet.
   Returns a non-blocking fd, or -errno.  struct ifreq's layout and the ioctl
   number come from the system headers, hence C rather than Python. */
static int keel_tap_open(const char *name)
{
    struct ifreq ifr;
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}
"""


def build(workdir: str = "build/ffi") -> str:
    """Compile the extension in ``workdir`` and install it as ``vmm/kvm/_kvm*.so``."""
    here = pathlib.Path(__file__).resolve().parent
    ffi = cffi.FFI()
    ffi.cdef(CDEF + CDEF_STATE)
    # blkfast.c is C of its own (a file, so compilers and readers see it as C).
    ffi.set_source("_kvm", SOURCE + (here / "blkfast.c").read_text())
    pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
    built = pathlib.Path(ffi.compile(tmpdir=workdir, verbose=False))
    target = here / built.name
    # Copy then rename: a running VMM may have the old library mapped.
    staging = target.with_name(target.name + ".new")
    shutil.copyfile(built, staging)
    staging.replace(target)
    return str(target)


if __name__ == "__main__":
    print(build())
