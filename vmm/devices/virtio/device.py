"""What a virtio device model offers the transport.

A device model knows its queues and its configuration space, never the
transport's registers: ``vmm.devices.virtio.mmio`` drives it.  ``service`` is called
under the transport's lock whenever the guest kicked a queue (from the
device's worker thread, woken by an ioeventfd, or with ``serve_on_notify``
from the vCPU thread that kicked) or one of ``wake_fds`` became readable; it consumes what
it can and returns True when it returned buffers to the driver.
"""

from __future__ import annotations

from vmm.devices.virtio.queue import Chain, DmaGuard, GuestRam, Virtqueue

# Device IDs (virtio 1.2, section 5).
ID_NET = 1
ID_BLOCK = 2
ID_CONSOLE = 3
ID_RNG = 4


class VirtioDevice:
    device_id = 0
    kind = "none"
    num_queues = 1
    queue_max = 256
    errors = 0  # requests that failed (a device counts them in its own instance)
    # A kick is served by the vCPU thread that made it (an MMIO exit; no ioeventfd),
    # not handed to the worker: no thread wake-up between the guest and the device.
    serve_on_notify = False

    def __init__(self, backing: str = "") -> None:
        self.backing = backing

    def device_features(self) -> int:
        """Device-specific feature bits (the transport adds VIRTIO_F_VERSION_1)."""
        return 0

    def config(self) -> bytes:
        return b""

    def write_config(self, offset: int, data: bytes) -> None:
        """Writes to read-only configuration fields are ignored."""

    def activate(self, mem: GuestRam, features: int) -> None:
        """The driver set DRIVER_OK with ``features`` negotiated."""
        self.mem = mem
        self.features = features

    def refuse(self, chain: Chain, dma: DmaGuard) -> int:
        """A request the DMA windows refused (it is returned without being served):
        write what the device type reports for a failed request, through ``dma``
        only, and return the bytes written.  Default: nothing, 0 bytes."""
        return 0

    def reset(self) -> None:
        """The driver wrote 0 to Status: forget every queue-related state."""

    def service(self, queues: list[Virtqueue | None]) -> bool:
        raise NotImplementedError

    def wake_fds(self) -> list[int]:
        """File descriptors whose readiness means the device has work (host input)."""
        return []

    def close(self) -> None:
        """Release host resources (files, TAP interfaces)."""

    # -- snapshots (vmm.snapshot) ---------------------------------------------------------
    def save_state(self) -> dict[str, object]:
        """What the model holds beyond its queues and registers (host input not yet
        given to the guest), as JSON values; called with the transport paused."""
        return {}

    def load_state(self, state: dict[str, object]) -> None:
        """The state ``save_state`` gave, on a fresh device made from the same options."""

    def restore_options(self) -> dict[str, object]:
        """Attach options that make a restored snapshot's device this very device
        (net: the TAP's actual name and MAC); they override the options as attached."""
        return {}

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "backing": self.backing}
