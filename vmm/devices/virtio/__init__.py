"""virtio: split virtqueues, the virtio-mmio transport, and the device models.

``queue`` parses and validates virtqueues (pure functions of guest memory);
``regs`` is the virtio-mmio register map; ``mmio`` is the transport (register
block, worker thread, ioeventfd/irqfd); ``blk``, ``net``, ``rng`` and
``console`` are device models that know nothing of the transport, each with a
``create`` factory (or its class) named in ``vmm.devices.registry``.
"""
