"""Snapshots: save a running guest to a directory, and continue it in a new process.

    keel snapshot --api-sock S DIR [--stop]     # {"cmd": "snapshot", "dir": DIR}
    keel restore DIR [--api-sock ...] [--verify]

A snapshot directory holds three files:

- ``memory``: guest RAM, slot after slot (sparse: zero pages are holes).
  A restore maps it privately (``MAP_PRIVATE``), so pages are read when the
  guest touches them and the guest's writes stay in its process: restoring
  the same snapshot twice gives two independent clones.
- ``state.json``: every vCPU's KVM state (registers, special registers,
  XSAVE, XCRs, MSRs, LAPIC, debug registers, events, MP state), the
  in-kernel PIC/IOAPIC/PIT and clock, and the VMM's devices (serial ports,
  virtio transports with queue addresses and ring indexes, each device
  model's own state (``VirtioDevice.save_state``: a console's unread input,
  the frames waiting on a TAP), hotplug controller, IOMMU windows) with how
  each was attached (``VirtioDevice.restore_options``: a TAP's actual name
  and MAC).
- ``manifest.json``: format and version, the machine's shape (vCPUs,
  memory, slots), the memory file's size and SHA-256, the state file's
  SHA-256, and each disk's path and size.

A restore checks the manifest, the state file's checksum, the memory file's
size (its checksum too with ``--verify``: reading all of it costs what a
restore is meant to save) and that every disk is there with its size, and
refuses with one line before anything starts.  Disks are not copied: the
restored guest continues on the same image files (two clones of a guest
with a writable disk would share it; give each its own copy).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

from vmm import builder, platform
from vmm.boot.elf import KernelImage
from vmm.builder import BootConfig, GuestVm
from vmm.errors import ConfigError, KeelError
from vmm.machine import Machine, State
from vmm.memory import GuestMemory
from vmm.snapshot import kvm_state

FORMAT = "keel-snapshot"
VERSION = 1
MANIFEST, STATE, MEMORY = "manifest.json", "state.json", "memory"
CHUNK = 1 << 20  # bytes written (or skipped as zero) at a time
_ZERO = bytes(CHUNK)


class SnapshotError(ConfigError):
    """A snapshot that cannot be taken or restored; the message says why."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


# -- taking a snapshot ---------------------------------------------------------------------
def take(machine: Machine, directory: str, resume: bool = True) -> dict[str, Any]:
    """Pause ``machine``, save it to ``directory`` (new or empty), resume it unless
    ``resume`` is False; returns the snapshot's size and the time it took."""
    started = time.monotonic()
    directory = os.path.abspath(directory)
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise SnapshotError(f"snapshot directory {directory!r} exists and is not empty")
    was_running = machine.state is State.RUNNING
    if was_running:
        machine.pause()
    elif machine.state is not State.PAUSED:
        raise SnapshotError(f"snapshot: illegal while the machine is {machine.state.value}")
    try:
        os.makedirs(directory, exist_ok=True)
        guest = machine.guest
        platform_state = machine.platform_state()  # refuses devices it cannot save
        for vcpu in guest.vcpus:
            # KVM finishes a port or MMIO read the VMM answered only at the next
            # KVM_RUN; with immediate_exit set that entry runs no guest code.
            vcpu.request_exit()
            vcpu.run()
        xsave_bytes = kvm_state.xsave_size(guest.system)
        msrs = kvm_state.msr_indices(guest.system, guest.vcpus[0])
        vcpus = [_encode(kvm_state.save_vcpu(v, msrs, xsave_bytes)) for v in guest.vcpus]
        state = {"vcpus": vcpus, "vm": _encode(kvm_state.save_vm(guest.vm)),
                 "platform": platform_state}  # fmt: skip
        state_bytes = json.dumps(state).encode()
        _write(os.path.join(directory, STATE), state_bytes)
        slots, mem_size, mem_hash = _save_memory(guest.mem, os.path.join(directory, MEMORY))
        manifest = {
            "format": FORMAT, "version": VERSION, "created": time.time(),
            "smp": machine.smp, "memory": machine.memory, "slots": slots,
            "memory_file": {"size": mem_size, "sha256": mem_hash},
            "state_file": {"sha256": hashlib.sha256(state_bytes).hexdigest()},
            "disks": _disks(platform_state),
            "serial2": platform_state["com2"] is not None,
        }  # fmt: skip
        _write(os.path.join(directory, MANIFEST), json.dumps(manifest, indent=1).encode())
    finally:
        if was_running and resume and machine.state is State.PAUSED:
            machine.resume()
    allocated = sum(os.stat(os.path.join(directory, f)).st_blocks * 512
                    for f in (MANIFEST, STATE, MEMORY))  # fmt: skip
    return {"dir": directory, "bytes": allocated, "memory": machine.memory,
            "seconds": round(time.monotonic() - started, 3),
            "state": machine.state.value}  # fmt: skip


def _encode(state: dict[str, Any]) -> dict[str, Any]:
    return {k: _b64(v) if isinstance(v, bytes) else v for k, v in state.items()}


def _decode(state: dict[str, Any]) -> dict[str, Any]:
    return {k: _unb64(v) if isinstance(v, str) else v for k, v in state.items()}


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _save_memory(mem: GuestMemory, path: str) -> tuple[list[list[int]], int, str]:
    """Every RAM slot into ``path`` (zero chunks as holes); the slots' (gpa, size,
    offset), the file's size and its SHA-256."""
    digest = hashlib.sha256()
    slots, offset = [], 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        for gpa, size, _mm, view, _buf in mem.slots:
            slots.append([gpa, size, offset])
            for pos in range(0, size, CHUNK):
                # A copy, compared as bytes (memcmp): comparing the memoryview
                # itself goes element by element, 40 times slower.
                chunk = view[pos : pos + CHUNK].tobytes()
                if chunk != _ZERO[: len(chunk)]:
                    os.pwrite(fd, chunk, offset + pos)
                    _hash_chunk(digest, offset + pos, chunk)
            offset += size
        os.ftruncate(fd, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return slots, offset, digest.hexdigest()


def _disks(platform_state: dict[str, Any]) -> list[dict[str, Any]]:
    disks = []
    for dev in platform_state["devices"]["devices"]:
        if dev["kind"] == "disk":
            path = dev["options"]["path"]
            disks.append({"id": dev["id"], "path": os.path.abspath(path),
                          "size": os.stat(path).st_size})  # fmt: skip
    return disks


# -- restoring ------------------------------------------------------------------------------
class Snapshot:
    """A checked snapshot directory (``load``), ready to be restored."""

    def __init__(self, directory: str, manifest: dict[str, Any], state: dict[str, Any]) -> None:
        self.directory, self.manifest, self.state = directory, manifest, state


def load(directory: str, verify: bool = False, smp: int | None = None) -> Snapshot:
    """Read and check a snapshot; SnapshotError names the first thing wrong."""
    directory = os.path.abspath(directory)
    what = f"snapshot {directory!r}"
    try:
        with open(os.path.join(directory, MANIFEST), "rb") as f:
            manifest = json.loads(f.read())
    except FileNotFoundError:
        raise SnapshotError(f"{what}: no {MANIFEST} (not a snapshot directory)") from None
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"{what}: unreadable {MANIFEST}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SnapshotError(f"{what}: {MANIFEST} is not a Keel snapshot manifest")
    if manifest.get("version") != VERSION:
        raise SnapshotError(f"{what}: snapshot version {manifest.get('version')!r}, "
                            f"this keel restores version {VERSION}")  # fmt: skip
    try:
        n_vcpus, memory = int(manifest["smp"]), int(manifest["memory"])
        slots = [(int(g), int(s), int(o)) for g, s, o in manifest["slots"]]
        mem_size = int(manifest["memory_file"]["size"])
        state_hash = str(manifest["state_file"]["sha256"])
        disks = list(manifest["disks"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"{what}: {MANIFEST} is damaged ({exc!r})") from None
    if smp is not None and smp != n_vcpus:
        raise SnapshotError(f"{what}: it has {n_vcpus} vCPUs, not {smp}")
    if [(g, s) for g, s, _ in slots] != platform.ram_slots(memory):
        raise SnapshotError(f"{what}: its memory layout does not match {memory} bytes of RAM")
    try:
        with open(os.path.join(directory, STATE), "rb") as f:
            state_bytes = f.read()
        actual = os.stat(os.path.join(directory, MEMORY)).st_size
    except OSError as exc:
        raise SnapshotError(f"{what}: {exc.filename}: {exc.strerror}") from None
    if hashlib.sha256(state_bytes).hexdigest() != state_hash:
        raise SnapshotError(f"{what}: {STATE} is damaged (its checksum does not match)")
    if actual != mem_size:
        raise SnapshotError(f"{what}: the {MEMORY} file has {actual} bytes, not {mem_size} "
                            "(truncated or replaced)")  # fmt: skip
    if verify and _file_hash(os.path.join(directory, MEMORY)) != manifest["memory_file"]["sha256"]:
        raise SnapshotError(f"{what}: the {MEMORY} file is damaged (its checksum does not match)")
    state = json.loads(state_bytes)
    if len(state["vcpus"]) != n_vcpus:
        raise SnapshotError(f"{what}: state for {len(state['vcpus'])} vCPUs, "
                            f"the manifest says {n_vcpus}")  # fmt: skip
    for disk in disks:
        try:
            size = os.stat(disk["path"]).st_size
        except OSError as exc:
            raise SnapshotError(f"{what}: disk {disk['id']} {disk['path']!r}: "
                                f"{exc.strerror}") from None  # fmt: skip
        if size != disk["size"]:
            raise SnapshotError(f"{what}: disk {disk['id']} {disk['path']!r} has {size} bytes, "
                                f"the snapshot's had {disk['size']}")  # fmt: skip
    return Snapshot(directory, manifest, state)


def _hash_chunk(digest: Any, offset: int, chunk: bytes | memoryview) -> None:
    """The memory checksum covers the chunks that are not all zero, each with its
    offset (zero chunks, most of an idle guest's RAM, cost nothing to check)."""
    digest.update(offset.to_bytes(8, "little"))
    digest.update(chunk)


def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        offset = 0
        while chunk := f.read(CHUNK):
            if chunk != _ZERO[: len(chunk)]:
                _hash_chunk(digest, offset, chunk)
            offset += len(chunk)
    return digest.hexdigest()


class _Plan:
    """``Machine.restore_plan``: the VM from the snapshot instead of a boot."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.restored_at = 0.0

    def create_vm(self, cfg: BootConfig, closers: list[Callable[[], None]]) -> GuestVm:
        slots = [tuple(int(x) for x in s) for s in self.snap.manifest["slots"]]
        fd = os.open(os.path.join(self.snap.directory, MEMORY), os.O_RDONLY | os.O_CLOEXEC)
        try:
            mem = GuestMemory.from_file(slots, fd)  # type: ignore[arg-type]
        finally:
            os.close(fd)  # the mappings keep the file
        closers.append(mem.close)
        return builder.new_vm(cfg, closers, mem)

    def restore_vcpus(
        self, cfg: BootConfig, guest: GuestVm, closers: list[Callable[[], None]]
    ) -> None:
        builder.create_vcpus(cfg, guest, closers)
        kvm_state.restore_vm(guest.vm, _decode(self.snap.state["vm"]))
        for vcpu, saved in zip(guest.vcpus, self.snap.state["vcpus"], strict=True):
            kvm_state.restore_vcpu(vcpu, _decode(saved))

    def platform_state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.snap.state["platform"]
        return state


def restore(snap: Snapshot, **machine_options: Any) -> Machine:
    """A machine that continues the snapshot's guest once started."""
    m = snap.manifest
    platform_state = snap.state["platform"]
    features = [(bool(on), str(name)) for on, name in platform_state.get("cpu_features", [])]
    # The guest's CPUID must stay what it saw: the same policy, on this host's limits.
    cfg = BootConfig(KernelImage(0, (), 0), int(m["smp"]), int(m["memory"]), None, features)
    machine = Machine(cfg, cmdline=platform_state.get("cmdline", ""),
                      serial2=bool(m.get("serial2")), **machine_options)  # fmt: skip
    try:
        for dev in platform_state["devices"]["devices"]:
            machine.attach_at(dev["kind"], dev["options"], dev["slot"], dev["id"])
    except KeelError:
        machine.close()
        raise
    machine.restore_plan = _Plan(snap)
    return machine
