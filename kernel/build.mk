# Kernel build: included from the top-level Makefile.  Produces
# build/kernel.elf, a PVH-bootable ELF (XEN_ELFNOTE_PHYS32_ENTRY) linked in
# the higher half and loaded at 1 MiB.
KCC ?= gcc
KLD ?= ld
KBUILD := $(BUILD)/kernel
ARCH := x86_64

KERNEL_CFLAGS := -std=gnu11 -O2 -g -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wno-unused-parameter \
	-ffreestanding -fno-builtin -nostdinc -fno-pic -fno-pie -fno-stack-protector \
	-fomit-frame-pointer -fno-asynchronous-unwind-tables -fno-strict-aliasing \
	-mcmodel=kernel -mno-red-zone -mgeneral-regs-only -mno-mmx -mno-sse -mno-sse2 \
	-Ikernel/include -Ikernel/uapi -I$(BUILD)/gen/include -Ikernel/arch/$(ARCH)/include \
	-Ikernel/arch/$(ARCH) -MMD -MP
KERNEL_ASFLAGS := -D__ASSEMBLY__ -Wa,--noexecstack -Ikernel/include -Ikernel/uapi \
	-I$(BUILD)/gen/include \
	-Ikernel/arch/$(ARCH)/include -fno-pic -fno-pie -MMD -MP
KERNEL_LDFLAGS := -nostdlib -static -z max-page-size=4096 --no-warn-rwx-segments \
	-T kernel/arch/$(ARCH)/kernel.ld

KERNEL_C := $(wildcard kernel/core/*.c) $(wildcard kernel/arch/$(ARCH)/*.c)
KERNEL_S := $(wildcard asm/$(ARCH)/*.S)
KERNEL_OBJS := $(patsubst %.c,$(KBUILD)/%.o,$(KERNEL_C)) \
	$(patsubst %.S,$(KBUILD)/%.o,$(KERNEL_S))

GEN_STAMP := $(BUILD)/gen/.stamp
$(GEN_STAMP): kernel/calls.tbl scripts/gencalls.py
	python3 scripts/gencalls.py kernel/calls.tbl $(BUILD)/gen
	@touch $@

kernel: $(BUILD)/kernel.elf

$(BUILD)/kernel.elf: $(KERNEL_OBJS) kernel/arch/$(ARCH)/kernel.ld
	$(KLD) $(KERNEL_LDFLAGS) -o $@ $(KERNEL_OBJS)

# The fast paths' entry points (IPC and capability) are called only from
# the entry code and never return (every way out restores a user frame),
# so their functions need not preserve the C ABI's callee-saved registers:
# without them the hot paths save none (calls out of them still treat them
# as clobbered).
$(KBUILD)/kernel/core/fastpath.o $(KBUILD)/kernel/core/capfast.o: KERNEL_CFLAGS += -fcall-used-rbx -fcall-used-r12 \
	-fcall-used-r13 -fcall-used-r14 -fcall-used-r15

$(KBUILD)/%.o: %.c $(GEN_STAMP)
	@mkdir -p $(dir $@)
	$(KCC) $(KERNEL_CFLAGS) -c -o $@ $<

$(KBUILD)/%.o: %.S $(GEN_STAMP)
	@mkdir -p $(dir $@)
	$(KCC) $(KERNEL_ASFLAGS) -c -o $@ $<

-include $(KERNEL_OBJS:.o=.d)

# The portable core as a host shared library, for the Python tests.
HOST_CORE_C := $(addprefix kernel/core/,cap.c grace.c region.c cnode.c untyped.c invoke.c objtype.c tcb.c endpoint.c \
	vspace.c sched.c objlock.c wait.c debug_console.c notification.c irq.c ioport.c iospace.c aml.c bootmem.c) \
	kernel/arch/host/host.c kernel/arch/host/host_grace.c
HOST_CFLAGS := -std=gnu11 -O1 -g -Wall -Wextra -Werror -Wno-unused-parameter -fPIC -shared \
	-nostdinc -ffreestanding -fno-builtin -Ikernel/include -Ikernel/uapi -I$(BUILD)/gen/include \
	-Ikernel/arch/host/include -fsanitize=undefined -fno-sanitize-recover=all

$(BUILD)/host/libkeelcore.so: $(HOST_CORE_C) $(GEN_STAMP) $(wildcard kernel/include/keel/*.h) kernel/arch/host/harness.h
	@mkdir -p $(dir $@)
	$(KCC) $(HOST_CFLAGS) -o $@ $(HOST_CORE_C)

host-lib: $(BUILD)/host/libkeelcore.so

# The same core at the kernel's optimisation, without the sanitizer, for
# counting its instructions under valgrind (scripts/corecount).
HOST_COUNT_CFLAGS := $(filter-out -O1 -fsanitize=undefined -fno-sanitize-recover=all,$(HOST_CFLAGS)) -O2
$(BUILD)/host/libkeelcore-count.so: $(HOST_CORE_C) $(GEN_STAMP) $(wildcard kernel/include/keel/*.h) kernel/arch/host/harness.h
	@mkdir -p $(dir $@)
	$(KCC) $(HOST_COUNT_CFLAGS) -o $@ $(HOST_CORE_C)

host-count-lib: $(BUILD)/host/libkeelcore-count.so
