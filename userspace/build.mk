# User programs and the initrd: included from the top-level Makefile.
UCC ?= gcc
UBUILD := $(BUILD)/user
USER_CFLAGS := -std=gnu11 -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter \
	-ffreestanding -fno-builtin -nostdinc -fno-pic -fno-pie -fno-stack-protector \
	-fno-asynchronous-unwind-tables -mno-avx -Ikernel/uapi -I$(BUILD)/gen/include \
	-Iuserspace/lib -MMD -MP
USER_LDFLAGS := -nostdlib -static -z max-page-size=4096 -T userspace/lib/user.ld

ULIB_OBJS := $(UBUILD)/lib/crt0.o $(UBUILD)/lib/libc.o $(UBUILD)/lib/channel.o \
	$(UBUILD)/lib/service.o
# Making objects and processes: for the programs that hold memory to do so.
UPROC_OBJS := $(UBUILD)/lib/objects.o $(UBUILD)/lib/spawn.o $(UBUILD)/lib/devices.o \
	$(UBUILD)/lib/start.o
INIT_OBJS := $(patsubst userspace/%.c,$(UBUILD)/%.o,$(wildcard userspace/init/*.c))
DEVMGR_OBJS := $(patsubst userspace/%.c,$(UBUILD)/%.o,$(wildcard userspace/devmgr/*.c))
TESTS_OBJS := $(patsubst userspace/%.c,$(UBUILD)/%.o,$(wildcard userspace/tests/*.c))
TRACE_OBJS := $(patsubst userspace/%.c,$(UBUILD)/%.o,$(wildcard userspace/trace/*.c))
NS_OBJS := $(UBUILD)/nameserv/nameserv.o
SHELL_OBJS := $(UBUILD)/shell/shell.o
FUZZ_OBJS := $(UBUILD)/fuzz/fuzz.o
# The fuzzer's table of calls, from the constants generated from calls.tbl.
FUZZ_GEN := $(BUILD)/gen/include/keel/fuzz_gen.h
$(FUZZ_GEN): scripts/genfuzz.py $(GEN_STAMP)
	python3 scripts/genfuzz.py $(BUILD)/gen/keel_abi.py $@
$(FUZZ_OBJS): $(FUZZ_GEN)

$(UBUILD)/%.o: userspace/%.c $(GEN_STAMP)
	@mkdir -p $(dir $@)
	$(UCC) $(USER_CFLAGS) -c -o $@ $<

$(UBUILD)/%.o: userspace/%.S
	@mkdir -p $(dir $@)
	$(UCC) -D__ASSEMBLY__ -c -o $@ $<

# Drivers: one program each, on the request loop they all share.
SERVE_OBJ := $(UBUILD)/drivers/serve.o
SERVED_DRIVERS := uart virtio_console virtio_net virtio_blk virtio_rng

$(UBUILD)/%.elf: $(ULIB_OBJS) $(SERVE_OBJ) $(UBUILD)/drivers/%.o userspace/lib/user.ld
	$(KLD) $(USER_LDFLAGS) -o $@ $(ULIB_OBJS) $(SERVE_OBJ) $(UBUILD)/drivers/$*.o

.SECONDARY: $(SERVE_OBJ) $(SERVED_DRIVERS:%=$(UBUILD)/drivers/%.o)

$(BUILD)/initrd.cpio: $(SERVED_DRIVERS:%=$(UBUILD)/%.elf)

-include $(SERVE_OBJ:.o=.d) $(SERVED_DRIVERS:%=$(UBUILD)/drivers/%.d)

$(UBUILD)/init.elf: $(ULIB_OBJS) $(UPROC_OBJS) $(INIT_OBJS) userspace/lib/user.ld
	$(KLD) $(USER_LDFLAGS) -o $@ $(ULIB_OBJS) $(UPROC_OBJS) $(INIT_OBJS)

$(UBUILD)/devmgr.elf: $(ULIB_OBJS) $(UPROC_OBJS) $(DEVMGR_OBJS) userspace/lib/user.ld
	$(KLD) $(USER_LDFLAGS) -o $@ $(ULIB_OBJS) $(UPROC_OBJS) $(DEVMGR_OBJS)

$(UBUILD)/tests.elf: $(ULIB_OBJS) $(UPROC_OBJS) $(TESTS_OBJS) userspace/lib/user.ld
	$(KLD) $(USER_LDFLAGS) -o $@ $(ULIB_OBJS) $(UPROC_OBJS) $(TESTS_OBJS)

$(UBUILD)/trace.elf: $(ULIB_OBJS) $(TRACE_OBJS) userspace/lib/user.ld
	$(KLD) $(USER_LDFLAGS) -o $@ $(ULIB_OBJS) $(TRACE_OBJS)

$(UBUILD)/nameserv.elf: $(ULIB_OBJS) $(NS_OBJS) userspace/lib/user.ld
	$(KLD) $(USER_LDFLAGS) -o $@ $(ULIB_OBJS) $(NS_OBJS)

$(UBUILD)/shell.elf: $(ULIB_OBJS) $(SHELL_OBJS) userspace/lib/user.ld
	$(KLD) $(USER_LDFLAGS) -o $@ $(ULIB_OBJS) $(SHELL_OBJS)

$(UBUILD)/fuzz.elf: $(ULIB_OBJS) $(FUZZ_OBJS) userspace/lib/user.ld
	$(KLD) $(USER_LDFLAGS) -o $@ $(ULIB_OBJS) $(FUZZ_OBJS)

# cpio "newc", the format Linux uses for its initramfs.  The programs go in
# without their debug sections (build/user/*.elf keep them for gdb): init
# copies the whole initrd into the tests program and the device manager
# gets copies of the drivers, a page at a time under emulated kernel code,
# so a quarter of the bytes makes every start seconds shorter.
INITRD_COPY := objcopy --strip-debug
$(BUILD)/initrd.cpio: $(UBUILD)/init.elf $(UBUILD)/trace.elf $(UBUILD)/nameserv.elf \
		$(UBUILD)/shell.elf $(UBUILD)/devmgr.elf $(UBUILD)/tests.elf $(UBUILD)/fuzz.elf
	@rm -rf $(UBUILD)/initrd && mkdir -p $(UBUILD)/initrd
	for d in $(SERVED_DRIVERS); do $(INITRD_COPY) $(UBUILD)/$$d.elf $(UBUILD)/initrd/$$d; done
	$(INITRD_COPY) $(UBUILD)/init.elf $(UBUILD)/initrd/init
	$(INITRD_COPY) $(UBUILD)/trace.elf $(UBUILD)/initrd/trace
	$(INITRD_COPY) $(UBUILD)/nameserv.elf $(UBUILD)/initrd/nameserv
	$(INITRD_COPY) $(UBUILD)/shell.elf $(UBUILD)/initrd/shell
	$(INITRD_COPY) $(UBUILD)/devmgr.elf $(UBUILD)/initrd/devmgr
	$(INITRD_COPY) $(UBUILD)/tests.elf $(UBUILD)/initrd/tests
	$(INITRD_COPY) $(UBUILD)/fuzz.elf $(UBUILD)/initrd/fuzz
	cd $(UBUILD)/initrd && ls | cpio --quiet -o -H newc > ../../initrd.cpio

initrd: $(BUILD)/initrd.cpio

-include $(INIT_OBJS:.o=.d) $(DEVMGR_OBJS:.o=.d) $(TESTS_OBJS:.o=.d) $(UPROC_OBJS:.o=.d) \
	$(ULIB_OBJS:.o=.d) $(TRACE_OBJS:.o=.d) $(NS_OBJS:.o=.d) $(SHELL_OBJS:.o=.d) \
	$(FUZZ_OBJS:.o=.d)
