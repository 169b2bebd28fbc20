"""Counters of a running machine, kept cheaply on the hot paths, and their report.

Each vCPU thread owns a ``VcpuStats`` it alone writes (no lock): exits by
kind, port-I/O exits by port, MMIO exits by address, and the time spent in
``KVM_RUN`` (the guest, including time the vCPU sat halted in the kernel)
and outside it (the VMM serving exits).  The device side keeps its own
counters where the work happens: interrupts signalled per line
(``DeviceManager.irq_counts``), requests and bytes returned per virtqueue,
errors per device, DMA refusals in the IOMMU's window tables, and hotplug
events in the controller.

``collect(machine)`` turns them into one JSON-ready dict; accesses are
named after the device that claims the address (``com1@0x3f8``,
``disk0@0xd0000000``).  ``format_table`` renders it for ``keel metrics``.
Reading happens from another thread while the vCPUs run; copying a dict of
ints is atomic under the GIL, so a report is consistent per counter (not
across counters, which is what a live counter report is anyway).
"""

from __future__ import annotations

import time

from vmm.devices.bus import Bus

TYPE_CHECKING = False  # typing costs ~4 ms of each start (vmm/records.py)
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:  # machine imports the runner, which imports this module
    from vmm.machine import Machine

METRICS_VERSION = 1


class VcpuStats:
    """One vCPU's counters; written only by its own thread."""

    __slots__ = ("exits", "guest_ns", "mmio", "ports", "vmm_ns")

    def __init__(self) -> None:
        self.exits: dict[str, int] = {}  # exits other than port I/O and MMIO, by kind
        self.ports: dict[int, int] = {}  # port-I/O exits by port
        self.mmio: dict[int, int] = {}  # MMIO exits by guest-physical address
        self.guest_ns = 0  # inside KVM_RUN
        self.vmm_ns = 0  # serving exits between two KVM_RUNs

    def report(self, index: int) -> dict[str, Any]:
        exits = dict(self.exits)
        exits["io"] = sum(dict(self.ports).values())
        exits["mmio"] = sum(dict(self.mmio).values())
        return {
            "index": index,
            "exits": dict(sorted(exits.items())),
            "total_exits": sum(exits.values()),
            "guest_s": round(self.guest_ns / 1e9, 6),
            "vmm_s": round(self.vmm_ns / 1e9, 6),
        }


def _device_name(bus: Bus, addr: int, names: dict[int, str]) -> str:
    hit = bus.find(addr)
    if hit is None:
        return "unclaimed"
    device, offset = hit
    base = addr - offset
    name = names.get(base) or getattr(device, "metrics_name", None) or type(device).__name__
    return f"{name}@{base:#x}"


def _by_device(bus: Bus, counts: dict[int, int], names: dict[int, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for addr, n in counts.items():
        key = _device_name(bus, addr, names)
        out[key] = out.get(key, 0) + n
    return dict(sorted(out.items()))


def collect(machine: Machine) -> dict[str, Any]:
    """Every counter of ``machine`` as a JSON-ready dict (see the module docstring)."""
    slots = machine.vcpu_slots()
    vcpus = [slot.stats.report(slot.vcpu.index) for slot in slots]
    exits: dict[str, int] = {}
    ports: dict[int, int] = {}
    mmio: dict[int, int] = {}
    for slot, rep in zip(slots, vcpus, strict=True):
        for kind, n in rep["exits"].items():
            exits[kind] = exits.get(kind, 0) + n
        for port, n in dict(slot.stats.ports).items():
            ports[port] = ports.get(port, 0) + n
        for addr, n in dict(slot.stats.mmio).items():
            mmio[addr] = mmio.get(addr, 0) + n
    slot_names = {int(d["base"], 16): d["id"] for d in machine.devices()}
    irqs = machine.irq_counts()
    return {
        "version": METRICS_VERSION,
        "time": round(time.time(), 3),
        "state": machine.state.value,
        "uptime_s": round(machine.uptime(), 3),
        "vcpus": vcpus,
        "exits": dict(sorted(exits.items())),
        "total_exits": sum(exits.values()),
        "guest_s": round(sum(v["guest_s"] for v in vcpus), 6),
        "vmm_s": round(sum(v["vmm_s"] for v in vcpus), 6),
        "pio": _by_device(machine.pio, ports, machine.pio_names()),
        "mmio": _by_device(machine.mmio, mmio, slot_names),
        "interrupts": {f"gsi{g}": n for g, n in sorted(irqs.items())},
        "total_interrupts": sum(irqs.values()),
        "virtio": machine.virtio_counters(),
        "hotplug_events": machine.hotplug_events(),
        "dma_faults": machine.iommu.total_faults,
    }


def format_table(m: dict[str, Any]) -> str:
    """A human-readable report of ``collect``'s dict (``keel metrics``)."""
    lines = [
        f"state {m['state']}  uptime {m['uptime_s']:.1f} s  exits {m['total_exits']}  "
        f"interrupts {m['total_interrupts']}  hotplug events {m['hotplug_events']}  "
        f"dma faults {m['dma_faults']}",
        "",
        f"{'VCPU':<5} {'EXITS':>10} {'IO':>10} {'MMIO':>10} {'OTHER':>8} "
        f"{'GUEST s':>9} {'VMM s':>9} {'VMM %':>6}",
    ]
    for v in m["vcpus"]:
        e = v["exits"]
        other = v["total_exits"] - e.get("io", 0) - e.get("mmio", 0)
        busy = v["guest_s"] + v["vmm_s"]
        share = 100 * v["vmm_s"] / busy if busy else 0.0
        lines.append(
            f"{v['index']:<5} {v['total_exits']:>10} {e.get('io', 0):>10} "
            f"{e.get('mmio', 0):>10} {other:>8} {v['guest_s']:>9.3f} {v['vmm_s']:>9.3f} "
            f"{share:>5.1f}%"
        )
    lines += ["", f"{'DEVICE':<24} {'ACCESSES':>10}"]
    for bus in ("pio", "mmio"):
        for name, n in m[bus].items():
            lines.append(f"{bus + ' ' + name:<24} {n:>10}")
    if m["virtio"]:
        lines += ["", f"{'VIRTIO':<10} {'REQUESTS':>10} {'BYTES':>12} {'ERRORS':>7} {'DMA REF':>8}"]
        for ident, d in m["virtio"].items():
            lines.append(
                f"{ident:<10} {d['requests']:>10} {d['bytes']:>12} {d['errors']:>7} "
                f"{d['dma_refusals']:>8}"
            )
    if m["interrupts"]:
        lines += ["", "interrupts: " + "  ".join(f"{k} {v}" for k, v in m["interrupts"].items())]
    lines.append("exits by kind: " + "  ".join(f"{k} {v}" for k, v in m["exits"].items()))
    return "\n".join(lines)
