"""The VMM killed with SIGKILL while the guest writes and flushes.

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

from tests.conftest import KEEL, ROOT, keel, requires_kvm

INITRD = ROOT / "build" / "initrd.cpio"
FIRST, BLOCKS, BLOCK = 64, 256, 4096  # crashtests.c: BLKW_FIRST, BLKW_BLOCKS
MAGIC = 0x6B65656C626C6B77
IMAGE_BLOCKS = 1024
ITERATIONS = int(os.environ.get("KEEL_CRASH_ITERATIONS", "2"))


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
    target = rng.randrange(0, 300)
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
            m = re.match(rb"blkw: flushed (\d+)", line)
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
    tail = b"".join(lines[-20:]).decode(errors="replace")
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
    for _ in range(ITERATIONS):
        image.write_bytes(b"".join(old_block(b) for b in range(IMAGE_BLOCKS)))
        kills.append(one_kill(image, rng))
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


@requires_kvm
def test_blk_driver_killed_under_load(tmp_path: Path) -> None:
    """keel.test=killcampaign (crashtests.c): the virtio-blk driver killed
    KEEL_DRIVER_KILLS times (default 8 in ``make test``) at random moments
    while a client writes, reads back and flushes; no client sees a wrong
    answer, and every acknowledged write is on the image (checked here)."""
    if not INITRD.exists():
        pytest.fail(f"{INITRD} is missing: run 'make'")
    image = tmp_path / "disk.img"
    image.write_bytes(b"".join(old_block(b) for b in range(IMAGE_BLOCKS)))
    proc = keel("run", "--smp", "2", "--initrd", str(INITRD), "--disk", str(image),
                "--hang-timeout", "90", "--cmdline",
                f"keel.test=killcampaign keel.kills={KILLS}", timeout=120 + 30 * KILLS)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    m = re.search(r"^kills: (\d+) kills, (\d+) writes acknowledged, (\d+) reads checked, "
                  r"(\d+) wrong answers", out, re.MULTILINE)  # fmt: skip
    assert m, out[-3000:]
    kills, writes, reads, wrong = (int(g) for g in m.groups())
    assert kills == KILLS and wrong == 0 and writes > kills and reads >= writes - 1
    assert out.count("devmgr: blk0: killing its driver") == KILLS
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
    print(f"kills: {kills} kills, {writes} writes, {reads} reads, 0 wrong answers")
