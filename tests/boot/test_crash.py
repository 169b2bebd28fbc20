"""Crash tests: the VMM killed with SIGKILL while the guest writes and flushes,
and drivers killed under load (the kill campaign, at the end).

The guest (keel.test=blkwrites, userspace/tests/crashtests.c) writes 4 KiB
blocks through the device manager's virtio-blk driver, flushes after each
and then prints ``blkw: flushed r``.  The host kills the VMM process at a
random moment and checks the image: its length is unchanged, every block
whose flush the host saw printed holds that round's data or a later
round's (never older, never torn into something else), and nothing outside
the written blocks changed.  ``KEEL_CRASH_ITERATIONS`` kills (default 2 in
``make test``; the long run's figure is in docs/reliability.md).
"""

from __future__ import annotations

import os
import random
import re
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import KEEL, ROOT, keel, requires_kvm, run_in_new_netns

INITRD = ROOT / "build" / "initrd.cpio"
FIRST, BLOCKS, BLOCK = 64, 256, 4096  # crashtests.c: BLKW_FIRST, BLKW_BLOCKS
MAGIC = 0x6B65656C626C6B77
IMAGE_BLOCKS = 1024
ITERATIONS = int(os.environ.get("KEEL_CRASH_ITERATIONS", "2"))
# The kill comes after a random number of flushed rounds below this (and a
# random moment more): most of an iteration's time is the guest's start, so
# a long run of many kills keeps each short.
ROUNDS = int(os.environ.get("KEEL_CRASH_ROUNDS", "300"))


def old_block(b: int) -> bytes:
    """What block b holds before any run: its number in every word."""
    return struct.pack("<512Q", *([0x0B1D_0000_0000_0000 | b] * 512))


def round_block(r: int) -> bytes:
    return struct.pack("<512Q", *(MAGIC ^ (r << 20) ^ i for i in range(512)))


def check_image(image: Path, flushed: int, highest_possible: int) -> None:
    """``flushed``: the last round the host saw flushed (-1: none);
    ``highest_possible``: no round after it can have been written."""
    data = image.read_bytes()
    assert len(data) == IMAGE_BLOCKS * BLOCK, "the image changed length"
    for b in range(IMAGE_BLOCKS):
        got = data[b * BLOCK : (b + 1) * BLOCK]
        if not FIRST <= b < FIRST + BLOCKS:
            assert got == old_block(b), f"block {b}, never written, changed"
            continue
        rounds = range(b - FIRST, highest_possible + 1, BLOCKS)  # the rounds that write b
        allowed = {round_block(r): r for r in rounds}
        durable = [r for r in rounds if r <= flushed]
        if durable:  # its last flushed round, or a later one, must be there
            r = allowed.get(got)
            assert r is not None and r >= durable[-1], (
                f"block {b}: flushed round {durable[-1]} lost "
                f"({'older round ' + str(r) if r is not None else 'other data'})")
        else:
            assert got == old_block(b) or got in allowed, f"block {b} holds other data"


def one_kill(image: Path, rng: random.Random) -> int:
    """Runs the guest until it has flushed a random number of rounds, waits a
    random moment more, kills the VMM with SIGKILL; returns the last round
    the host saw flushed after checking the image."""
    proc = subprocess.Popen(
        [*KEEL, "run", "--smp", "2", "--initrd", str(INITRD), "--disk", str(image),
         "--hang-timeout", "90", "--cmdline", "keel.test=blkwrites"],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    flushed = -1
    lines: list[bytes] = []
    target = rng.randrange(0, ROUNDS)
    deadline = time.monotonic() + 240
    stopped = threading.Event()

    def killer() -> None:
        stopped.wait()
        time.sleep(rng.uniform(0, 0.3))
        proc.send_signal(signal.SIGKILL)

    t = threading.Thread(target=killer)
    t.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            # Only a whole line: the kill can cut the last one short
            # ("blkw: flushed 2" of "... 234").
            m = re.match(rb"blkw: flushed (\d+)\r?\n", line)
            if m:
                flushed = int(m.group(1))
                if flushed >= target:
                    stopped.set()
            if b"FAIL" in line or time.monotonic() > deadline:
                break
    finally:
        stopped.set()
        t.join()
        proc.kill()
        proc.wait()
    assert proc.stderr is not None
    tail = (b"".join(lines[-20:]) + proc.stderr.read()[-2000:]).decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, tail
    assert flushed >= target, f"the guest flushed only {flushed} rounds:\n{tail}"
    # Rounds after the last one seen may have been written (not flushed) when
    # the kill came; a few more than were printed at most.
    check_image(image, flushed, flushed + 2)
    return flushed


@requires_kvm
def test_flushed_writes_survive_kill_9(tmp_path: Path) -> None:
    if not INITRD.exists():
        pytest.fail(f"{INITRD} is missing: run 'make'")
    rng = random.Random(int(os.environ.get("KEEL_CRASH_SEED", "18")))
    image = tmp_path / "disk.img"
    kills = []
    for i in range(ITERATIONS):
        image.write_bytes(b"".join(old_block(b) for b in range(IMAGE_BLOCKS)))
        kills.append(one_kill(image, rng))
        print(f"crash: kill {i + 1}: image checked after flushed round {kills[-1]}", flush=True)
    print(f"crash: {len(kills)} kills, flushed rounds before each: {kills}")


def test_the_image_check_catches_a_lost_flush(tmp_path: Path) -> None:
    """The checker itself: an image missing a flushed round, or changed
    outside the written blocks, or of another length, is refused."""
    image = tmp_path / "disk.img"
    blocks = [old_block(b) for b in range(IMAGE_BLOCKS)]
    for r in range(10):
        blocks[FIRST + r] = round_block(r)
    image.write_bytes(b"".join(blocks))
    check_image(image, 9, 11)
    with pytest.raises(AssertionError, match="flushed round 9 lost"):
        lost = list(blocks)
        lost[FIRST + 9] = old_block(FIRST + 9)
        image.write_bytes(b"".join(lost))
        check_image(image, 9, 11)
    bad = list(blocks)
    bad[3] = round_block(3)
    image.write_bytes(b"".join(bad))
    with pytest.raises(AssertionError, match="never written, changed"):
        check_image(image, 9, 11)
    image.write_bytes(b"".join(blocks) + b"x")
    with pytest.raises(AssertionError, match="length"):
        check_image(image, 9, 11)


KILLS = int(os.environ.get("KEEL_DRIVER_KILLS", "8"))
CAMPAIGN_HANG = 120.0


def check_acknowledged_rounds(image: Path, writes: int) -> None:
    """Every block holds the last acknowledged round written to it; the
    blocks never written are untouched."""
    data = image.read_bytes()
    assert len(data) == IMAGE_BLOCKS * BLOCK
    for b in range(IMAGE_BLOCKS):
        got = data[b * BLOCK : (b + 1) * BLOCK]
        i = b - FIRST
        if 0 <= i < min(BLOCKS, writes):
            last = writes - 1 - (writes - 1 + BLOCKS - i) % BLOCKS
            assert got == round_block(last), f"block {b}: acknowledged round {last} missing"
        else:
            assert got == old_block(b), f"block {b}, never written, changed"


def check_console_lines(text: str, acknowledged: int) -> None:
    """The virtio-console client's lines as the host got them: whole, in order
    from 0, each the one before or the next (a line sent again after a kill
    may come twice), up to at least the last acknowledged one."""
    last = -1
    for n, line in enumerate(text.splitlines()):
        m = re.fullmatch(r"hvc: line (\d+) of the kill campaign", line)
        assert m, f"console line {n} is not whole: {line!r}"
        r = int(m.group(1))
        assert r in (last, last + 1) and r >= 0, f"console line {n}: {r} after {last}"
        last = r
    assert last >= acknowledged - 1, f"acknowledged line {acknowledged - 1} never came"


def campaign_counts(out: str, name: str, what: str) -> list[int]:
    m = re.search(rf"^kills: {name} (\d+) kills, {what}", out, re.MULTILINE)
    assert m, f"no {name} summary:\n{out[-3000:]}"
    return [int(g) for g in m.groups()]


def check_replaced(out: str, name: str, program: str, kills: int) -> None:
    """The device manager killed the driver ``kills`` times and started a new one each time."""
    assert out.count(f"devmgr: {name}: killing its driver") == kills
    assert out.count(f"devmgr: {name}: {program} started") == kills + 1


@requires_kvm
def test_blk_driver_killed_under_load(tmp_path: Path) -> None:
    """keel.test=killcampaign (crashtests.c) on a machine with only a disk:
    the virtio-blk driver killed KEEL_DRIVER_KILLS times (default 8 in
    ``make test``) at random moments while a client writes, reads back and
    flushes; no client sees a wrong answer, and every acknowledged write is
    on the image (checked here)."""
    if not INITRD.exists():
        pytest.fail(f"{INITRD} is missing: run 'make'")
    image = tmp_path / "disk.img"
    image.write_bytes(b"".join(old_block(b) for b in range(IMAGE_BLOCKS)))
    proc = keel("run", "--smp", "2", "--initrd", str(INITRD), "--disk", str(image),
                "--hang-timeout", str(CAMPAIGN_HANG), "--cmdline",
                f"keel.test=killcampaign keel.kills={KILLS}", timeout=120 + 30 * KILLS)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    kills, writes, reads, wrong = campaign_counts(
        out, "blk0", r"(\d+) writes acknowledged, (\d+) reads checked, (\d+) wrong answers")
    assert kills == KILLS and wrong == 0 and writes > kills and reads >= writes
    assert "kills: net0" not in out and "kills: hvc0" not in out
    check_replaced(out, "blk0", "virtio_blk", KILLS)
    check_acknowledged_rounds(image, writes)
    print(f"kills: {kills} kills, {writes} writes, {reads} reads, 0 wrong answers")


@requires_kvm
def test_drivers_killed_under_load(tmp_path: Path) -> None:
    """The same campaign with a disk, a virtio-net on a TAP (in a network
    namespace of its own, the host's stack answering the guest's pings) and a
    virtio-console: KEEL_DRIVER_KILLS kills shared at random among the three
    drivers while their clients write, read, ping and print; no client sees
    a wrong answer, the device manager replaces every driver, every
    acknowledged block write is on the image and every acknowledged console
    line reached the host, whole and in order."""
    if not INITRD.exists():
        pytest.fail(f"{INITRD} is missing: run 'make'")
    image, hvc = tmp_path / "disk.img", tmp_path / "hvc.txt"
    image.write_bytes(b"".join(old_block(b) for b in range(IMAGE_BLOCKS)))
    proc = run_in_new_netns("tests.boot.netns_killcampaign", str(image), str(hvc), str(KILLS),
                            str(CAMPAIGN_HANG), timeout=CAMPAIGN_HANG + 120 + 30 * KILLS)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    m = re.search(r"^kills: (\d+) kills in all, (\d+) wrong answers", out, re.MULTILINE)
    assert m and int(m.group(1)) == KILLS and int(m.group(2)) == 0, out[-3000:]
    blk, writes, reads, wrong_blk = campaign_counts(
        out, "blk0", r"(\d+) writes acknowledged, (\d+) reads checked, (\d+) wrong answers")
    net, echoes, _late, wrong_net = campaign_counts(
        out, "net0", r"(\d+) echoes checked, (\d+) late or repeated, (\d+) wrong answers")
    con, lines, wrong_con = campaign_counts(
        out, "hvc0", r"(\d+) lines acknowledged, (\d+) wrong answers")
    assert blk + net + con == KILLS and wrong_blk == wrong_net == wrong_con == 0
    assert writes > 0 and reads >= writes and echoes > 0 and lines > 0
    for name, program, kills in (("blk0", "virtio_blk", blk), ("net0", "virtio_net", net),
                                 ("hvc0", "virtio_console", con)):
        check_replaced(out, name, program, kills)
    check_acknowledged_rounds(image, writes)
    check_console_lines(hvc.read_text(), lines)
    print(f"kills: {KILLS} (blk0 {blk}, net0 {net}, hvc0 {con}); {writes} writes, "
          f"{echoes} echoes, {lines} console lines; 0 wrong answers")


def test_the_console_check_catches_a_lost_or_torn_line() -> None:
    """The console checker itself: lines repeated once after a kill pass; a
    line missing, out of order, torn, or an acknowledged one never come, fail."""
    lines = [f"hvc: line {r} of the kill campaign" for r in (0, 1, 2, 2, 3)]
    check_console_lines("\n".join(lines) + "\n", 4)
    for bad, why in (([0, 2], "2 after 0"), ([1], "1 after -1"), ([0, 1, 0], "0 after 1")):
        text = "".join(f"hvc: line {r} of the kill campaign\n" for r in bad)
        with pytest.raises(AssertionError, match=why):
            check_console_lines(text, 1)
    with pytest.raises(AssertionError, match="not whole"):
        check_console_lines("hvc: line 0 of the kill campaign\nhvc: line 1 of the\n", 1)
    with pytest.raises(AssertionError, match="acknowledged line 4 never came"):
        check_console_lines("\n".join(lines) + "\n", 5)
