"""virtio-net throughput against QEMU microvm, same run (`scripts/bench --net`),
and the bar plots of the I/O figures (docs/io.png, docs/net.png).

The guest is `keel.test=netbench` (userspace/tests/netbench.c): Keel's
user-space virtio-net driver and a client moving frames through it several
per call.  It runs under Keel's VMM (`keel run --net TAP`) and under
`qemu-system-x86_64 -M microvm` (`-netdev tap,...,vhost=off`, its
virtio-net-device), alternately, each on a TAP made afresh in a network
namespace made for the benchmark (`ip tuntap add`, the same for both).  This
process stands on the TAP's host end with an AF_PACKET socket: it counts the
guest's frames and sends the frames the guest asks for, at most WINDOW
unacknowledged (netbench.c's protocol).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KERNEL = ROOT / "build" / "kernel.elf"
INITRD = ROOT / "build" / "initrd.cpio"
TAP = "keelnb0"
MAC = "52:54:00:12:34:58"
NB_TYPE = 0x88B5
WINDOW = 8  # netbench.c's NB_WINDOW
QEMU_DEVICE = "virtio_mmio.device=512@0xfeb00e00:23"  # QEMU microvm's last transport

# (key, label, size): the guest's kbench figures net_<key>_{frames,bytes,time}
CASES = [
    ("tx_small", "virtio-net guest → host, 60-byte frames", 60),
    ("tx_large", "virtio-net guest → host, 1514-byte frames", 1514),
    ("rx_small", "virtio-net host → guest, 60-byte frames", 60),
    ("rx_large", "virtio-net host → guest, 1514-byte frames", 1514),
]

PlotBar = tuple[str, float, float, str]  # label, Keel, QEMU, unit


class HostEnd:
    """The TAP's host end: counts the guest's frames, serves its requests."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(NB_TYPE))
        self.sock.bind((TAP, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.settimeout(0.2)
        self.seen: dict[int, int] = {}  # frame size -> data frames the guest sent
        self.ended: dict[int, int] = {}  # frame size -> the count the guest said it sent
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        want = sent = acked = size = 0
        guest = b"\xff" * 6
        while not self.stop.is_set():
            try:
                f = self.sock.recv(4096)
            except TimeoutError:
                continue
            if len(f) < 22 or f[12:14] != struct.pack("!H", NB_TYPE):
                continue
            tag, num = f[14:18], struct.unpack("!I", f[18:22])[0]
            if tag == b"kbtx":
                self.seen[len(f)] = self.seen.get(len(f), 0) + 1
                continue
            if tag == b"kbte":
                self.ended[struct.unpack("!I", f[22:26])[0]] = num
                continue
            if tag == b"kbrq":
                want, sent, acked = num, 0, 0
                size, guest = struct.unpack("!I", f[22:26])[0], f[6:12]
            elif tag == b"kbak":
                acked = num
            else:
                continue
            head = guest + b"\x02\x00\x00\x00\x00\x02" + struct.pack("!H", NB_TYPE) + b"kbrx"
            while sent < want and sent - acked < WINDOW:
                frame = head + struct.pack("!I", sent)
                self.sock.send(frame + bytes(size - len(frame)))
                sent += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _one(vmm: str, frames: int, one: bool) -> dict[str, int]:
    """One guest run under ``vmm`` on a fresh TAP: its kbench figures."""
    _sh("ip", "tuntap", "add", "dev", TAP, "mode", "tap")
    _sh("ip", "link", "set", TAP, "up")
    host = HostEnd()
    line = f"keel.test=netbench keel.frames={frames}" + (" keel.many=0" if one else "")
    if vmm == "keel":
        cmd = [sys.executable, "-m", "vmm.cli", "run", str(KERNEL), "--smp", "1",
               "--initrd", str(INITRD), "--net", TAP, "--cmdline", line]
    else:
        cmd = [str(shutil.which("qemu-system-x86_64")), "-M", "microvm,ioapic2=off",
               "-enable-kvm", "-cpu", "host,-arch-capabilities", "-smp", "1", "-m", "256M",
               "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
               "-kernel", str(KERNEL), "-initrd", str(INITRD),
               "-append", f"{line} {QEMU_DEVICE}",
               "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
               "-global", "virtio-mmio.force-legacy=false",
               "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no,vhost=off",
               "-device", f"virtio-net-device,netdev=n0,mac={MAC}"]  # fmt: skip
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900,
                             stdin=subprocess.DEVNULL).stdout  # fmt: skip
    finally:
        host.close()
        _sh("ip", "link", "del", TAP)
    figs = {m[0]: int(m[1]) for m in re.findall(r"^kbench: (net_\w+) (\d+) ", out, re.M)}
    if figs.get("net_errors", 1) or len(figs) != 1 + 3 * len(CASES):
        raise SystemExit(f"netbench under {vmm} failed:\n{out[-3000:]}")
    for key, _label, size in CASES[:2]:
        sent = figs[f"net_{key}_frames"]
        if host.ended.get(size) != sent or host.seen.get(size, 0) != sent:
            raise SystemExit(f"netbench under {vmm}: the guest sent {sent} frames of {size} "
                             f"bytes, the host saw {host.seen.get(size, 0)} "
                             f"(the guest said {host.ended.get(size)})")  # fmt: skip
    return figs


def inside(runs: int, frames: int, qemu: bool, one: bool) -> None:
    """In the benchmark's namespace: every run, Keel then QEMU; JSON on stdout."""
    try:  # keep IPv6 router solicitations off the TAP
        Path("/proc/sys/net/ipv6/conf/default/disable_ipv6").write_text("1")
    except OSError:
        pass
    results: dict[str, list[dict[str, int]]] = {"keel": [], "qemu": []}
    for _ in range(runs):
        for vmm in ("keel", "qemu") if qemu else ("keel",):
            results[vmm].append(_one(vmm, frames, one))
    print(json.dumps(results))


def net_figures(runs: int, frames: int, one: bool = False) -> dict[str, Any]:
    """The runs' figures ({"keel": [...], "qemu": [...]}), measured in a network
    namespace made for them and removed after."""
    # the pid first: a test finds its own run's namespace among concurrent runs'
    ns = f"keelbench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        args = [sys.executable, str(ROOT / "scripts" / "bench"), "--net-inside", "--runs",
                str(runs), "--frames", str(frames)]  # fmt: skip
        if shutil.which("qemu-system-x86_64") is None:
            args.append("--no-qemu")
        if one:
            args.append("--one-frame-per-call")
        proc = subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the net benchmark failed: {proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def net_rows(
    runs: int, frames: int, hz: float, one: bool = False
) -> tuple[list[tuple[str, str, str, str]], list[PlotBar]]:
    """Rows (frames/s and MB/s for each case, Keel against QEMU, medians of the
    runs) and the plot's bars; ``one``: one frame per call (no DRV_MANY)."""
    res = net_figures(runs, frames, one)
    rows, bars = [], []
    for key, label, size in CASES:

        def rate(r: dict[str, int], what: str, key: str = key) -> float:
            return r[f"net_{key}_{what}"] / (r[f"net_{key}_time"] / hz)

        k_fps = statistics.median(rate(r, "frames") for r in res["keel"])
        k_mbs = statistics.median(rate(r, "bytes") for r in res["keel"]) / 1e6
        if res["qemu"]:
            q_fps = statistics.median(rate(r, "frames") for r in res["qemu"])
            q_mbs = statistics.median(rate(r, "bytes") for r in res["qemu"]) / 1e6
            ref, ratio = f"{q_fps:.0f} frames/s, {q_mbs:.2f} MB/s (QEMU microvm)", k_fps / q_fps
            if size < 1000:  # small frames: what a frame costs; full ones: the bytes moved
                bars.append((label.removeprefix("virtio-net "), k_fps, q_fps, "frames/s"))
            else:
                bars.append((label.removeprefix("virtio-net "), k_mbs, q_mbs, "MB/s"))
            rows.append((label, f"{k_fps:.0f} frames/s, {k_mbs:.2f} MB/s", ref, f"{ratio:.2f}x"))
        else:
            rows.append((label, f"{k_fps:.0f} frames/s, {k_mbs:.2f} MB/s", "n/a", "n/a"))
    return rows, bars


def write_bars(bars: list[PlotBar], out: Path, title: str) -> None:
    """Each figure in a panel of its own, Keel beside QEMU microvm (same run)."""
    if not bars:
        return
    try:
        import matplotlib  # lazy: only a plot needs it (pyplot: 560 ms, python -X importtime)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)", file=sys.stderr)
        return
    cols = 3 if len(bars) > 4 else 2
    rows = (len(bars) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
    for ax, (label, keel, qemu, unit) in zip(axes.flat, bars, strict=False):
        ax.bar(["Keel", "QEMU microvm"], [keel, qemu], color=["tab:blue", "lightgrey"])
        ax.set_title(f"{label}\n{keel / qemu:.2f}x QEMU", fontsize=9)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=8)
        for x, v in enumerate((keel, qemu)):
            text = f"{v:.0f}" if v >= 10 else f"{v:.2f}"
            ax.text(x, v, text, ha="center", va="bottom", fontsize=8)
    for ax in list(axes.flat)[len(bars) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"(plot written to {out.relative_to(ROOT)})", file=sys.stderr)
