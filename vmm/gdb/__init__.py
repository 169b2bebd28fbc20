"""A GDB remote-protocol stub for the guest: ``keel run --gdb tcp:HOST:PORT``.

``server`` speaks the protocol, ``target`` drives the vCPUs (stop, step,
continue, breakpoints), ``regs`` lays out the registers, ``paging`` walks the
guest's page tables for memory by virtual address.
"""
