"""virtio-rng (entropy device, ID 4): fills device-writable buffers from the host's
random source (getrandom(2))."""

from __future__ import annotations

import os

from vmm.devices.virtio.device import ID_RNG, VirtioDevice
from vmm.devices.virtio.queue import QueueError, Virtqueue

MAX_BYTES_PER_REQUEST = 64 << 10  # a short fill is legal; it bounds one request's cost


class RngDevice(VirtioDevice):
    device_id = ID_RNG
    kind = "rng"
    num_queues = 1

    def __init__(self) -> None:
        super().__init__("getrandom")

    def service(self, queues: list[Virtqueue | None]) -> bool:
        q = queues[0]
        if q is None:
            return False
        chains = q.pop_all()
        for chain in chains:
            if chain.readable:
                raise QueueError(f"rng request {chain.head}: device-readable buffer")
            left = MAX_BYTES_PER_REQUEST
            written = 0
            for buf in chain.buffers:
                n = min(buf.length, left)
                if n == 0:
                    break
                self.mem.write(buf.addr, os.getrandom(n))
                written += n
                left -= n
            q.push(chain.head, written)
        return bool(chains)
