"""virtio: split virtqueues, the virtio-mmio transport, and the device models.

``queue`` parses and validates virtqueues (pure functions of guest memory);
``mmio`` is the transport register block; ``blk``, ``net``, ``rng`` and
``console`` are device models that know nothing of the transport.
"""
