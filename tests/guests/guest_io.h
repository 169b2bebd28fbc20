/* What the corpus guests share (tests/guests/corpus.S, pvh_entry.S): the
 * PVH entry note for _start, console output through COM1 with `out`, and
 * the exit port. */
#define COM1 0x3f8
#define EXIT_PORT 0xf4

    .section .note.Xen, "a", @note
    .balign 4
    .long 4, 4, 18          /* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long _start

/* putc/puts/puthex, assembled once per mode: the text is valid in both.
 * putc: al; puts: esi (NUL-terminated); puthex: eax as 8 hex digits.
 * All clobber eax, ecx, edx, esi, edi. */
.macro IO_FUNCS sfx
putc\sfx:
    mov %al, %ah
    mov $COM1+5, %dx
1:  in %dx, %al
    test $0x20, %al
    jz 1b
    mov $COM1, %dx
    mov %ah, %al
    out %al, %dx
    ret
puts\sfx:
1:  lodsb
    test %al, %al
    jz 2f
    call putc\sfx
    jmp 1b
2:  ret
puthex\sfx:
    mov %eax, %edi
    mov $8, %ecx
1:  rol $4, %edi
    mov %edi, %eax
    and $0xf, %eax
    cmp $10, %al
    jb 2f
    add $('a' - '0' - 10), %al
2:  add $'0', %al
    call putc\sfx
    loop 1b
    ret
.endm

/* SAY: print a string; HEX: print a 32-bit value (both clobber as puts). */
.macro SAY32 s
    mov $\s, %esi
    call puts32
.endm
.macro HEX32 v
    mov \v, %eax
    call puthex32
.endm
.macro SAY s
    mov $\s, %esi
    call puts64
.endm
.macro HEX v
    mov \v, %eax
    call puthex64
.endm

