/* Tiny PVH guests for VMM tests: 32-bit code, no kernel.
 * One source, several behaviours chosen with -DGUEST_<NAME>. */
#define COM1 0x3f8
#define EXIT_PORT 0xf4

    .section .note.Xen, "a", @note
    .balign 4
    .long 4                 /* namesz */
    .long 4                 /* descsz */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long _start

    .text
    .code32
    .globl _start
_start:
    mov $stack_top, %esp
    mov $hello, %esi
    call puts
#if defined(GUEST_TRIPLE)
    lidt zero_idt
    xor %ecx, %ecx          /* #DE through an empty IDT: #DF, then shutdown */
    div %ecx
#elif defined(GUEST_PROBE)
    /* Touch ports and MMIO nobody emulates: the VMM must answer harmlessly. */
    mov $0x2f8, %dx
    inb %dx, %al
    cmp $0xff, %al
    jne fail
    mov $0x510, %dx
    movw $0x1234, %ax
    outw %ax, %dx
    movl $0xc0000000, %ebx
    movl (%ebx), %eax
    cmp $0xffffffff, %eax
    jne fail
    movl $0x5a5a5a5a, (%ebx)
    mov $probed, %esi
    call puts
#elif defined(GUEST_EXITS)
    /* A fixed number of port writes to the unused POST port: exit-cost bench. */
    mov $EXIT_COUNT, %ecx
    mov $0x80, %dx
1:  outb %al, %dx
    loop 1b
#elif defined(GUEST_VIRTIO)
    /* Slots 0-2 hold blk, rng and console (attached at boot): check each one's
     * identity, set it up as a driver does, then feed it a malformed queue
     * and expect DEVICE_NEEDS_RESET; reset it and expect it clean again. */
    movl $0xd0000000, %ebx
    mov $2, %ecx
    movl $0x10000, %edi
    xor %esi, %esi          /* descriptor outside guest RAM */
    call vprobe
    movl $0xd0001000, %ebx
    mov $4, %ecx
    movl $0x11000, %edi
    mov $1, %esi            /* a descriptor chained to itself */
    call vprobe
    movl $0xd0002000, %ebx
    mov $3, %ecx
    movl $0x12000, %edi
    mov $2, %esi            /* available index far ahead */
    call vprobe
    movl $0xd0003000, %ebx  /* an empty slot: a valid block with device ID 0 */
    cmpl $0x74726976, (%ebx)
    jne fail
    cmpl $0, 8(%ebx)
    jne fail
    movl $0xd000f000, %ebx  /* the hotplug controller: magic, slots 0-2 present */
    cmpl $0x4350484b, (%ebx)
    jne fail
    cmpl $7, 0x20(%ebx)
    jne fail
    mov $virtio_ok, %esi
    call puts
#elif defined(GUEST_CPUID)
    /* What --cpu-features changes: CPUID.1 ECX bit 21 (X2APIC) and bit 13 (CX16). */
    mov $1, %eax
    xor %ecx, %ecx
    cpuid
    mov %ecx, %edi
    mov $x2apic0, %esi
    bt $21, %ecx
    jnc 1f
    mov $x2apic1, %esi
1:  call puts
    mov $cx160, %esi
    bt $13, %edi
    jnc 2f
    mov $cx161, %esi
2:  call puts
#elif defined(GUEST_HANG)
1:  hlt
    jmp 1b
#elif defined(GUEST_FAIL)
    jmp fail
#endif
    mov $EXIT_PORT, %dx
    mov $0x10, %al
    outb %al, %dx
    hlt

fail:
    mov $EXIT_PORT, %dx
    mov $0x11, %al
    outb %al, %dx
    hlt

#if defined(GUEST_VIRTIO)
/* vprobe: ebx = slot base, ecx = expected device ID, edi = 4 KiB of free RAM
 * for the rings, esi = which malformation.  Returns only on success. */
vprobe:
    cmpl $0x74726976, 0x00(%ebx)   /* MagicValue */
    jne fail
    cmpl $2, 0x04(%ebx)            /* Version */
    jne fail
    cmp %ecx, 0x08(%ebx)           /* DeviceID */
    jne fail
    movl $0, 0x70(%ebx)            /* Status: reset */
    movl $3, 0x70(%ebx)            /* ACKNOWLEDGE | DRIVER */
    movl $1, 0x24(%ebx)            /* DriverFeaturesSel = 1 */
    movl $1, 0x20(%ebx)            /* VIRTIO_F_VERSION_1 (bit 32) */
    movl $0, 0x24(%ebx)
    movl $0, 0x20(%ebx)
    movl $0xb, 0x70(%ebx)          /* | FEATURES_OK */
    testl $8, 0x70(%ebx)
    jz fail
    movl $0, 0x30(%ebx)            /* QueueSel 0 */
    movl $8, 0x38(%ebx)            /* QueueNum 8 */
    mov %edi, 0x80(%ebx)           /* descriptor table */
    movl $0, 0x84(%ebx)
    lea 0x80(%edi), %eax
    mov %eax, 0x90(%ebx)           /* driver area */
    movl $0, 0x94(%ebx)
    lea 0x100(%edi), %eax
    mov %eax, 0xa0(%ebx)           /* device area */
    movl $0, 0xa4(%ebx)
    movl $1, 0x44(%ebx)            /* QueueReady */
    cmpl $1, 0x44(%ebx)
    jne fail
    movl $0xf, 0x70(%ebx)          /* | DRIVER_OK */
    /* descriptor 0 */
    movl $0x20000, 0(%edi)
    movl $0, 4(%edi)
    movl $64, 8(%edi)
    movw $2, 12(%edi)              /* WRITE */
    movw $0, 14(%edi)
    cmp $0, %esi
    jne 1f
    movl $0x10, 4(%edi)            /* address 64 GiB: outside guest RAM */
1:  cmp $1, %esi
    jne 2f
    movw $3, 12(%edi)              /* NEXT | WRITE, next = 0: a loop */
2:  movw $0, 0x84(%edi)            /* avail ring[0] = 0 */
    movw $0, 0x80(%edi)            /* avail flags */
    movw $1, 0x82(%edi)            /* avail idx = 1 */
    cmp $2, %esi
    jne 3f
    movw $100, 0x82(%edi)          /* avail idx = 100: more than the queue holds */
3:  movl $0, 0x50(%ebx)            /* QueueNotify (an ioeventfd: no exit) */
    mov $200000, %ecx
4:  testl $0x40, 0x70(%ebx)        /* DEVICE_NEEDS_RESET */
    jnz 5f
    loop 4b
    jmp fail
5:  testl $2, 0x60(%ebx)           /* InterruptStatus: configuration change */
    jz fail
    movl $2, 0x64(%ebx)            /* InterruptACK */
    movl $0, 0x70(%ebx)            /* reset */
    cmpl $0, 0x70(%ebx)
    jne fail
    cmpl $0, 0x44(%ebx)
    jne fail
    ret
#endif

/* puts(esi): poll LSR, then write one byte. */
puts:
1:  lodsb
    test %al, %al
    jz 2f
    mov %al, %ah
    mov $COM1+5, %dx
3:  inb %dx, %al
    test $0x20, %al
    jz 3b
    mov $COM1, %dx
    mov %ah, %al
    outb %al, %dx
    jmp 1b
2:  ret

hello:  .asciz "tiny: hello\n"
probed: .asciz "tiny: probe ok\n"
virtio_ok: .asciz "tiny: virtio ok\n"
x2apic0: .asciz "tiny: cpuid1 ecx x2apic=0\n"
x2apic1: .asciz "tiny: cpuid1 ecx x2apic=1\n"
cx160:  .asciz "tiny: cpuid1 ecx cx16=0\n"
cx161:  .asciz "tiny: cpuid1 ecx cx16=1\n"
    .balign 8
zero_idt: .word 0
    .long 0

    .bss
    .balign 16
    .space 4096
stack_top:
