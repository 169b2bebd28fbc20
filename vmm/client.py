"""keel's client commands: one request to a running VMM's control socket
(``attach``, ``detach``, ``devices``, ``status``, ...), the streams (``events``,
``console``) and ``keel list`` of the VMMs running here."""

from __future__ import annotations

import os
import sys

from vmm import session
from vmm.devices.registry import KINDS
from vmm.errors import ConfigError, KeelError

TYPE_CHECKING = False  # `keel run` imports this module: argparse and typing cost ~10 ms
if TYPE_CHECKING:
    import argparse
    from typing import Any


def say(data: bytes) -> None:
    """Write to stdout; a closed pipe or terminal must not stop the guest."""
    try:
        os.write(sys.stdout.fileno(), data)
    except (OSError, ValueError):
        pass


def _client_request(args: argparse.Namespace) -> dict[str, object]:
    if args.command == "attach":
        req: dict[str, object] = {"cmd": "attach", "kind": args.kind}
        for opt in KINDS[args.kind].options:
            value = getattr(args, opt.name)
            if value is not None:
                req[opt.name] = os.path.abspath(value) if opt.path and value else value
        if args.wait:
            req["wait"] = True
        return req
    if args.command == "detach":
        ident = args.device
        if os.sep in ident or os.path.exists(ident):
            ident = os.path.abspath(ident)
        return {"cmd": "detach", "device": ident, "force": args.force,
                "wait": not args.no_wait and not args.force, "timeout": args.timeout}  # fmt: skip
    if args.command == "snapshot":
        return {"cmd": "snapshot", "dir": os.path.abspath(args.dir), "resume": not args.stop}
    return {"cmd": args.command}


def _dma_column(device: dict[str, object]) -> str:
    """"open" (no IOMMU enforcement), or "<windows>win/<refused accesses>fault"."""
    if not device.get("dma_enforcing"):
        return "open"
    return f"{device.get('dma_windows', 0)}win/{device.get('dma_faults', 0)}fault"


def cmd_client(args: argparse.Namespace) -> int:
    """One request to a running VMM's control socket; prints the answer."""
    from vmm import api  # lazy: see vmm.cli.cmd_run (about 4 ms of start-up)

    if not hasattr(args, "api_sock"):
        raise ConfigError(f"keel {args.command} needs --api-sock PATH (the VMM's socket)")
    if args.command in ("events", "console"):
        return _stream(api, args)
    timeout = 30.0 + (args.timeout if args.command == "detach" else 0.0)
    result = api.request(args.api_sock, _client_request(args), timeout=timeout)
    if args.command == "attach":
        print(result["id"])
    elif args.command == "devices":
        print(f"{'ID':<10} {'KIND':<8} {'SLOT':<4} {'STATE':<11} {'DMA':<16} BACKING")
        for d in result:
            print(f"{d['id']:<10} {d['kind']:<8} {d['slot']:<4} {d['state']:<11} "
                  f"{_dma_column(d):<16} {d['backing']}")  # fmt: skip
    elif args.command in ("status", "version", "snapshot"):
        print(" ".join(f"{k}={v}" for k, v in result.items()))
    return 0


def _stream(api: Any, args: argparse.Namespace) -> int:
    """``events``: one JSON line per event; ``console``: the terminal on the console."""
    sock = api.connect(args.api_sock, timeout=30)
    with sock:
        cmd = "subscribe" if args.command == "events" else "console"
        sock.sendall(f'{{"cmd": "{cmd}"}}\n'.encode())
        reader = sock.makefile("rb")
        reply = reader.readline()
        if not reply.startswith(b'{"ok": true'):
            raise ConfigError(f"the VMM refused {cmd}: {reply.decode(errors='replace').strip()}")
        sock.settimeout(None)
        if args.command == "console":
            return session.console_client(sock)
        for line in reader:
            say(line)
    return 0


def cmd_list() -> int:
    from vmm import api  # lazy: see vmm.cli.cmd_run (about 4 ms of start-up)

    print(f"{'PID':<8} {'STATE':<9} {'VCPUS':<5} {'MEMORY':<8} API-SOCK")
    for info in session.running():
        try:
            status = api.request(info["api_sock"], {"cmd": "status"}, timeout=5)
        except KeelError:
            continue
        memory = f"{status['memory'] >> 20}MiB"
        print(f"{info['pid']:<8} {status['state']:<9} {status['vcpus']:<5} {memory:<8} "
              f"{info['api_sock']}")  # fmt: skip
    return 0
