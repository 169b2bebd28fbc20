"""Thin Python bindings to Linux KVM: one type per file-descriptor level.

``System`` is /dev/kvm, ``Vm`` a virtual machine, ``Vcpu`` one virtual CPU
whose ``run()`` returns a typed exit (``vmm.kvm.exits``).  Struct layouts and
ioctl numbers come from the compiled ``_kvm`` extension, built from the
system's <linux/kvm.h> by ``ffi_build``.  Import the submodules directly: this package imports
nothing, so ``python -m vmm.kvm.ffi_build`` works before the extension exists.
"""
