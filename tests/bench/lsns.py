"""The anchors: the system's lsns, and the newest util-linux lsns from sid, unpacked privately.

The sid build runs beside the system's without installing it (its own loader and libraries), as
../shared/design/kernel-notes.md describes. Cached in .cache/lsns/.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "lsns"
PACKAGES = ["util-linux", "libc6", "libsmartcols1", "libmount1", "libblkid1", "libselinux1", "libpcre2-8-0",
            "libcap-ng0", "libudev1", "libtinfo6", "libaudit1"]


def system_lsns() -> list[str]:
    path = shutil.which("lsns")
    if not path:
        raise RuntimeError("lsns missing: `make setup` installs util-linux")
    return [path]


def _command(tree: Path) -> list[str]:
    libs = f"{tree}/usr/lib/x86_64-linux-gnu:{tree}/lib/x86_64-linux-gnu"
    loader = next((p for p in (tree / "usr/lib64/ld-linux-x86-64.so.2", tree / "lib64/ld-linux-x86-64.so.2")
                   if p.exists()), None)
    if loader is None:
        raise RuntimeError(f"no loader in {tree}")
    return [str(loader), "--library-path", libs, str(tree / "usr/bin/lsns")]


def newest_lsns() -> tuple[list[str], str]:
    """(command, version) of sid's lsns, downloading it once; raises RuntimeError with the reason."""
    tree = CACHE / "tree"
    if not (tree / "usr/bin/lsns").exists():
        from tests.vm.vmtest import PrivateApt  # the kernel matrix's private apt, reused

        apt = PrivateApt(CACHE / "apt")
        apt.write_sources(["sid"], None)
        if not apt.update():
            raise RuntimeError("Debian archive unreachable and no cached sid lsns")
        debs = CACHE / "debs"
        tmp = CACHE / "tree.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for pkg in PACKAGES:
            rows = [r for r in apt.madison([pkg]) if r[2] == "sid"]
            if not rows:
                raise RuntimeError(f"{pkg} not found in sid")
            version = rows[0][1]
            debs.mkdir(parents=True, exist_ok=True)
            # apt-get download writes an epoch's ':' as %3a in the file name: match on the package
            found = [d for d in debs.glob(f"{pkg}_*.deb") if version.split(":")[-1] in d.name]
            if not found:
                subprocess.run(["apt-get", *apt.options(), "download", f"{pkg}={version}"], cwd=debs,
                               check=True, capture_output=True)
                found = [d for d in debs.glob(f"{pkg}_*.deb") if version.split(":")[-1] in d.name]
            if not found:
                raise RuntimeError(f"apt-get download {pkg}={version} produced no file")
            subprocess.run(["dpkg", "-x", str(found[0]), str(tmp)], check=True)
        tmp.rename(tree)
    cmd = _command(tree)
    out = subprocess.run([*cmd, "--version"], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"sid lsns does not run here: {out.stderr.strip()[:200]}")
    return cmd, out.stdout.strip()
