#!/usr/bin/env python3
"""Write the venv's ``keel`` program: ``python -S`` and the two paths site would add.

pip's console script runs the interpreter with ``site``, which imports the
site module, reads every ``.pth`` file (setuptools' distutils hack among
them) and builds the path: about 3 ms of each `keel` start (CPU time of
``python -c pass`` against ``python -S -c pass``, minimum of 20), beside a
boot of about 60 ms.  This program skips it and adds what `keel` needs:
the venv's site-packages (cffi, pyelftools, psutil, pyroute2) and this
checkout (the editable install's one ``.pth`` line), after the standard
library as site puts them, so PYTHONPATH still comes first.

    python scripts/write_launcher.py .venv      (make venv runs it)
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TEMPLATE = '''#!{python} -S
# Written by scripts/write_launcher.py (make venv): `python -S` skips site
# (about 3 ms of each start); the paths site would add come after the
# standard library, as site puts them.
import sys

sys.path += [{site_packages!r}, {root!r}]
from vmm.cli import entry

entry()
'''


def main() -> int:
    venv = Path(sys.argv[1] if len(sys.argv) > 1 else ".venv").resolve()
    python = venv / "bin" / "python"
    paths = sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})
    site_packages = paths["purelib"]
    if not os.path.isdir(site_packages):
        raise SystemExit(f"{site_packages} does not exist: is {venv} a venv?")
    out = venv / "bin" / "keel"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(TEMPLATE.format(python=python, site_packages=site_packages, root=str(ROOT)))
    tmp.chmod(0o755)
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
