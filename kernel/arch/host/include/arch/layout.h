#ifndef ARCH_LAYOUT_H
#define ARCH_LAYOUT_H
#define KSTACK_SIZE 16384
#endif
