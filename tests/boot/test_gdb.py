"""The gdb stub: real gdb in batch mode against ``keel run --gdb``, and the remote
protocol spoken directly for what gdb's batch output does not show."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import KEEL, ROOT, requires_kvm
from vmm.boot import elf

pytestmark = [
    requires_kvm,
    pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed"),
]

GDB_SCRIPT = """
set pagination off
set confirm off
target remote {target}
info threads
break kmain
continue
p/x $pc
stepi
p/x $pc
next
info registers cr3
break cpu_secondary_main
continue
p ((struct cpu *)$gs_base)->index
thread 1
p ((struct cpu *)$gs_base)->index
delete
watch cpus[1].state
continue
delete
continue
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _keel_gdb(kernel: Path, where: str, test: str | None = "boot") -> subprocess.Popen[str]:
    """`keel run --gdb WHERE` on 2 vCPUs; with ``test`` None no test runs: the
    kernel waits on its console (a pipe kept open) for ever."""
    cmdline = [] if test is None else ["--cmdline", f"keel.test={test}"]
    return subprocess.Popen(
        [*KEEL, "run", str(kernel), "--smp", "2", "--memory", "64M", *cmdline, "--gdb", where],
        cwd=ROOT, stdin=subprocess.DEVNULL if test else subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_listening(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "waiting for gdb" in line, line + proc.communicate()[1]


def _gdb_session(kernel: Path, tmp_path: Path, script: str, test: str = "boot") -> str:
    """Real gdb in batch mode running script against a guest started under
    ``keel run --gdb`` with ``keel.test=test``; what gdb printed.  The guest
    must end passing."""
    port = _free_port()
    proc = _keel_gdb(kernel, f"tcp:127.0.0.1:{port}", test)
    try:
        _wait_listening(proc)
        path = tmp_path / "session.gdb"
        path.write_text(script.format(target=f"127.0.0.1:{port}"))
        gdb = subprocess.run(["gdb", "-nx", "-batch", "-x", str(path), str(kernel)],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        out = gdb.stdout + gdb.stderr
        status = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        guest = proc.communicate()
    assert status == 0, out + "\n--- the guest:\n" + guest[0][-3000:] + guest[1][-3000:]
    return out


def _main_c_line(text: str) -> int:
    """The line of kernel/core/main.c that is ``text`` (gdb names lines by number)."""
    return (ROOT / "kernel/core/main.c").read_text().splitlines().index(text) + 1


def test_gdb_breaks_steps_reads_per_cpu_data_and_watches(kernel: Path, tmp_path: Path) -> None:
    out = _gdb_session(kernel, tmp_path, GDB_SCRIPT)
    # stopped before the first instruction: vCPU 1 waits for its startup IPI
    assert "in pvh_start32 ()" in out
    assert "Thread 2 (vCPU 1 (not started))" in out
    first = _main_c_line("    arch_early_init(si, &boot_info);")  # kmain's first statement
    assert "Thread 1 hit Breakpoint 1, kmain (" in out and f"kernel/core/main.c:{first}" in out
    kmain = _symbol(kernel, "kmain")
    assert f"$1 = {kmain:#x}" in out
    assert "$2 = " in out and f"$2 = {kmain:#x}" not in out  # stepi moved on
    banner = "    boot_banner(boot_info.cmdline);"
    assert f"{_main_c_line(banner)}\t{banner}" in out  # next: over a call
    assert "cr3            0x" in out
    assert "Thread 2 hit Breakpoint 2, cpu_secondary_main ()" in out
    assert "$3 = 1" in out and "$4 = 0" in out  # this_cpu()->index on vCPU 1, then vCPU 0
    assert "Thread 2 hit Hardware watchpoint 3: cpus[1].state" in out
    assert "Old value = 2\nNew value = 3" in out  # CPU_BOOTING -> CPU_ONLINE
    assert "exited normally" in out


# Both vCPUs started: vCPU 1 has reached cpu_secondary_main.
AT_CPU1_START = """
set pagination off
set confirm off
target remote {target}
break cpu_secondary_main
continue
delete
"""

TICKS_SCRIPT = AT_CPU1_START + """watch cpus[1].ticks
continue
continue
continue
delete
watch cpus[0].ticks
continue
continue
continue
delete
continue
"""


def test_a_watchpoint_names_the_vcpu_that_wrote(kernel: Path, tmp_path: Path) -> None:
    """Each CPU's tick counter is written only by that CPU's timer interrupt,
    while the other vCPU steps beside it: every hit names the writer."""
    out = _gdb_session(kernel, tmp_path, TICKS_SCRIPT)
    hits = [line for line in out.splitlines() if "hit Hardware watchpoint" in line]
    assert hits == ["Thread 2 hit Hardware watchpoint 2: cpus[1].ticks"] * 3 + [
        "Thread 1 hit Hardware watchpoint 3: cpus[0].ticks"
    ] * 3, out


# keel.test=timer passes once every CPU's own timer has ticked 10 times (20 s
# at most); vCPU 1 idles in cpu_secondary_main's `sti; hlt` loop meanwhile.
STEP_HLT_SCRIPT = AT_CPU1_START + """break *{hlt:#x}
continue
delete
stepi
p/x $pc
info threads
continue
"""


def _hlt_in(kernel: Path, function: str) -> int:
    """The address of the first HLT instruction in function."""
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--disassemble={function}",
                          str(kernel)], capture_output=True, text=True, check=True)  # fmt: skip
    for line in dis.stdout.splitlines():
        if line.split()[1:2] == ["hlt"]:
            return int(line.split(":")[0], 16)
    raise AssertionError(f"no hlt in {function}")


def test_stepping_a_hlt_halts_the_vcpu_there(kernel: Path, tmp_path: Path) -> None:
    """gdb's stepi over the idle loop's HLT: vCPU 1 halts with its pc past the
    HLT, and wakes at its next timer interrupt once the guest runs free."""
    hlt = _hlt_in(kernel, "cpu_secondary_main")
    out = _gdb_session(kernel, tmp_path, STEP_HLT_SCRIPT.replace("{hlt:#x}", f"{hlt:#x}"),
                       test="timer")  # fmt: skip
    assert f"Thread 2 hit Breakpoint 2, {hlt:#x}" in out, out
    assert f"$1 = {hlt + 1:#x}" in out, out
    assert "Thread 2 (vCPU 1 (halted))" in out, out


def _symbol(kernel: Path, name: str) -> int:
    nm = subprocess.run(["nm", str(kernel)], capture_output=True, text=True, check=True)
    for line in nm.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise AssertionError(f"{name} not in {kernel}")


class Remote:
    """The remote protocol by hand."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(str(path))
        self.buf = b""

    def send(self, body: str) -> None:
        data = body.encode()
        self.sock.sendall(b"$" + data + b"#" + b"%02x" % (sum(data) & 0xFF))

    def ask(self, body: str) -> str:
        self.send(body)
        return self.reply()

    def reply(self) -> str:
        return self.reply_raw(skip_output=True)

    def reply_raw(self, skip_output: bool = False) -> str:
        while True:
            start = self.buf.find(b"$")
            end = self.buf.find(b"#", start)
            if start >= 0 and end >= 0 and len(self.buf) >= end + 3:
                reply = self.buf[start + 1 : end].decode()
                self.buf = self.buf[end + 3 :]
                with contextlib.suppress(OSError):  # the stub may be gone after D or W
                    self.sock.sendall(b"+")
                if skip_output and reply.startswith("O") and reply != "OK":
                    continue  # console output of a monitor command
                return reply
            chunk = self.sock.recv(65536)
            assert chunk, "the stub closed the connection"
            self.buf += chunk


def test_protocol_refusals_physical_memory_and_detach(kernel: Path, tmp_path: Path) -> None:
    path = tmp_path / "gdb.sock"
    proc = _keel_gdb(kernel, f"unix:{path}")
    try:
        _wait_listening(proc)
        r = Remote(path)
        assert "qXfer:features:read+" in r.ask("qSupported:swbreak+")
        xml = r.ask("qXfer:features:read:target.xml:0,4000")
        assert xml.startswith("l") and 'name="gs_base"' in xml and 'name="cr3"' in xml
        assert r.ask("?") == "T05thread:1;"
        assert r.ask("qfThreadInfo") == "m1,2"
        assert r.ask("Hg3").startswith("E")
        # user-space breakpoints and read watchpoints: refused, with the reason
        refused = r.ask("Z0,401000,1")
        assert refused.startswith("E.") and "only kernel code" in refused
        assert "hardware debug registers" in r.ask("Z3,ffffffff80100000,8")
        # before paging is on, virtual is physical: the entry code's bytes
        image = elf.load_kernel(kernel)
        seg = min(image.segments, key=lambda s: s.paddr)
        assert r.ask(f"m{seg.paddr:x},10") == seg.data[:16].hex()
        assert r.ask("qRcmd," + b"phys on".hex()) == "OK"
        assert r.ask(f"m{seg.paddr:x},10") == seg.data[:16].hex()
        assert r.ask("m7fff0000000,10") == "E14"  # outside guest RAM
        # stepping vCPU 0 moves its rip from the PVH entry
        stop = r.ask("vCont;s:1")
        assert stop == "T05thread:1;"
        rip = int.from_bytes(bytes.fromhex(r.ask("p10")), "little")
        assert rip != image.entry32
        assert r.ask("D") == "OK"  # the guest runs on to its verdict
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_bad_gdb_address_is_one_line(kernel: Path) -> None:
    proc = subprocess.run([*KEEL, "run", str(kernel), "--gdb", "serial:/dev/ttyS0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "keel: error: --gdb 'serial:/dev/ttyS0': expected tcp:HOST:PORT or unix:PATH"
    ]


def test_gdb_sees_the_guest_end_when_it_ends_while_running(kernel: Path, tmp_path: Path) -> None:
    path = tmp_path / "gdb.sock"
    proc = _keel_gdb(kernel, f"unix:{path}")
    try:
        _wait_listening(proc)
        assert Remote(path).ask("c") == "W00"
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_ctrl_c_stops_a_running_guest_and_kill_ends_it(kernel: Path, tmp_path: Path) -> None:
    """Without a test the kernel waits on its console for ever; Ctrl-C stops it."""
    path = tmp_path / "gdb.sock"
    proc = _keel_gdb(kernel, f"unix:{path}", test=None)
    try:
        _wait_listening(proc)
        r = Remote(path)
        r.send("c")
        assert proc.stdout is not None
        while "smp ready 2 cpus" not in proc.stdout.readline():
            pass
        r.sock.sendall(b"\x03")
        assert r.reply().startswith("T02thread:")
        assert r.ask("?").startswith("T02thread:")
        assert "vCPU 1 (" in bytes.fromhex(r.ask("qThreadExtraInfo,2")).decode()
        r.send("k")
        assert proc.wait(60) == 0  # killed: stopped by request
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_guest_runs_on_when_gdb_vanishes_while_it_continues(kernel: Path, tmp_path: Path) -> None:
    """A breakpoint armed, continue, and gdb's connection drops: the VMM forgets
    the breakpoints and the guest runs to its verdict instead of waiting stopped."""
    path = tmp_path / "gdb.sock"
    proc = _keel_gdb(kernel, f"unix:{path}")
    try:
        _wait_listening(proc)
        r = Remote(path)
        assert r.ask(f"Z0,{_symbol(kernel, 'cpu_secondary_main'):x},1") == "OK"
        r.send("c")
        r.sock.close()
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _address(kernel: Path, expression: str) -> int:
    out = subprocess.run(["gdb", "-nx", "-batch", "-ex", f"p/x (long)({expression})", str(kernel)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return int(out.rsplit("=", 1)[1], 16)


def test_an_idle_vcpu_ticks_on_after_a_stop_at_a_watchpoint(kernel: Path, tmp_path: Path) -> None:
    """vCPU 1 idles (no test: the kernel waits on its console for ever), stopped
    at its idle loop's sti, then continued with a watchpoint on its tick count:
    it halts in the continue's single steps, and the stop comes in its timer
    interrupt, interrupts off.  After the guest ran free a moment, it must still
    take interrupts: with the host's KVM left to single-step the hlt it halted
    for good after its first free instruction there.  Eight rounds, as a tick
    due at the sti is taken before the hlt instead (the hlt not executed)."""
    sti = _hlt_in(kernel, "cpu_secondary_main") - 1
    entry, ticks = _symbol(kernel, "cpu_secondary_main"), _address(kernel, "&cpus[1].ticks")
    path = tmp_path / "gdb.sock"
    proc = _keel_gdb(kernel, f"unix:{path}", test=None)
    try:
        _wait_listening(proc)
        r = Remote(path)
        assert r.ask(f"Z0,{entry:x},1") == "OK" and r.ask("c") == "T05swbreak:;thread:2;"
        assert r.ask(f"z0,{entry:x},1") == "OK"
        for _ in range(8):
            assert r.ask(f"Z0,{sti:x},1") == "OK" and r.ask("c") == "T05swbreak:;thread:2;"
            assert r.ask(f"z0,{sti:x},1") == "OK" and r.ask(f"Z2,{ticks:x},8") == "OK"
            assert r.ask("c") == f"T05watch:{ticks:x};thread:2;"
            assert r.ask(f"z2,{ticks:x},8") == "OK"
        r.send("c")  # free: no breakpoint, no single steps
        time.sleep(0.5)  # a moment to run (not measured: the watchpoint below checks)
        r.sock.sendall(b"\x03")
        assert r.reply().startswith("T02")
        # vCPU 1 ticks again (a vCPU halted with interrupts off never would:
        # the remote's 60 s timeout ends the wait)
        assert r.ask(f"Z2,{ticks:x},8") == "OK"
        assert r.ask("c") == f"T05watch:{ticks:x};thread:2;"
        r.send("k")
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
