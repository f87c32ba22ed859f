#!/usr/bin/env python3
"""Build the nstrack container image with Debian's podman, without a registry and without touching the host's
container configuration.

    .venv/bin/python deploy/container/build_image.py            # `make image`
    .venv/bin/python deploy/container/build_image.py --base docker.io/library/debian:bookworm-slim

Steps:

1. Writes a private podman configuration under build/image/podman/ (containers.conf, storage.conf; storage,
   run state, locks and events live there too) and points podman at it with CONTAINERS_CONF and
   CONTAINERS_STORAGE_CONF, so the user's own podman configuration and images are never read or changed.
2. Without --base: builds a Debian bookworm base with mmdebstrap (minbase, merged /usr, docs, man pages and
   locales excluded like the slim image) from the host's Debian mirror, caches the tarball in .cache/image/,
   and imports it as localhost/nstrack-base:bookworm. With --base, uses (and if needed pulls) that image.
3. Builds the wheels on this host (nstrack with its precompiled BPF objects from `make bpf`, and its
   dependencies) into build/image/context/wheels/: the image has a single stage and never sees a compiler.
4. `podman build` of deploy/container/Containerfile with that context, host networking (apt-get inside the
   build reaches the Debian mirror), tagged nstrack:VERSION.

Other programs (the image test) import this file for podman_env() and the names.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "deploy" / "container" / "Containerfile"
BUILD = ROOT / "build" / "image"
PODMAN_DIR = BUILD / "podman"
CONTEXT = BUILD / "context"
CACHE = ROOT / ".cache" / "image"

SUITE = "bookworm"
LOCAL_BASE = f"localhost/nstrack-base:{SUITE}"
BASE_TARBALL = CACHE / f"debian-{SUITE}-minbase.tar"
# Like the slim image: no documentation (but the copyright files), man pages, info pages or translations.
# mmdebstrap writes these to /etc/dpkg/dpkg.cfg.d/ of the base, so they hold for packages installed later too.
DPKG_EXCLUDES = [
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
]
SOURCE_DATE_EPOCH = 315532800  # 1980-01-01, the earliest zip timestamp
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY = "http://deb.debian.org/debian-security"


def version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def default_tag() -> str:
    return f"localhost/nstrack:{version()}"


def podman_env() -> dict[str, str]:
    """The environment every podman call of this project runs with (writes the configuration if needed)."""
    write_config()
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(PODMAN_DIR / "containers.conf")
    env["CONTAINERS_STORAGE_CONF"] = str(PODMAN_DIR / "storage.conf")
    return env


def write_config() -> None:
    """containers.conf and storage.conf for a root podman whose whole state lives under build/image/podman/."""
    for d in ("storage", "run", "tmp", "copytmp", "networks"):
        (PODMAN_DIR / d).mkdir(parents=True, exist_ok=True)
    driver = os.environ.get("NSTRACK_IMAGE_STORAGE_DRIVER", "overlay")
    storage = f"""\
# Written by deploy/container/build_image.py: the nstrack image's private podman storage.
[storage]
driver = "{driver}"
graphroot = "{PODMAN_DIR / 'storage'}"
runroot = "{PODMAN_DIR / 'run'}"
"""
    # Podman as root asks the runtime for RLIMIT_NOFILE 1048576 and RLIMIT_NPROC at least 32768 (it sets its
    # own NPROC to 32768); without CAP_SYS_RESOURCE (sandboxes) raising a hard limit fails with EPERM, so ask
    # for what podman itself runs with.
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else min(nofile, 1048576)
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    containers = f"""\
# Written by deploy/container/build_image.py: podman settings for building and testing the nstrack image.
[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
netns = "host"

[engine]
# runc: crun 1.8 refuses hybrid cgroup hierarchies (v1 controllers plus an empty v2 mount)
runtime = "runc"
# no systemd as init on every host
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{PODMAN_DIR / 'events.log'}"
# file locks under tmp_dir instead of the shared /libpod_lock shm segment of the host's own podman
lock_type = "file"
tmp_dir = "{PODMAN_DIR / 'tmp'}"
static_dir = "{PODMAN_DIR / 'storage' / 'libpod'}"
volume_path = "{PODMAN_DIR / 'storage' / 'volumes'}"
image_copy_tmp_dir = "{PODMAN_DIR / 'copytmp'}"

[network]
network_config_dir = "{PODMAN_DIR / 'networks'}"
"""
    for name, text in (("storage.conf", storage), ("containers.conf", containers)):
        path = PODMAN_DIR / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def podman(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("podman")
    if not exe:
        raise SystemExit("error: podman is not installed (`make deps` installs it from Debian)")
    return subprocess.run([exe, *args], env=podman_env(), check=check, text=True, stdin=subprocess.DEVNULL,
                          capture_output=capture)


def host_mirrors() -> tuple[str, str]:
    """The Debian mirror and security mirror the host's apt uses (one-line and deb822 sources)."""
    entries: list[tuple[str, list[str]]] = []  # (uri, suites)
    files = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list")),
             *sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))]
    for f in files:
        try:
            text = Path(f).read_text()
        except OSError:
            continue
        if f.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
                if fields.get("Enabled", "yes").lower() == "no" or "deb" not in fields.get("Types", "").split():
                    continue
                for uri in fields.get("URIs", "").split():
                    entries.append((uri, fields.get("Suites", "").split()))
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m:
                    entries.append((m.group(1), [m.group(2)]))
    main = next((u for u, s in entries if SUITE in s), DEFAULT_MIRROR)
    security = next((u for u, s in entries if f"{SUITE}-security" in s), DEFAULT_SECURITY)
    return main.rstrip("/"), security.rstrip("/")


def base_tarball(refresh: bool) -> Path:
    if BASE_TARBALL.exists() and not refresh:
        print(f"base: cached {BASE_TARBALL.relative_to(ROOT)}", flush=True)
        return BASE_TARBALL
    exe = shutil.which("mmdebstrap")
    if not exe:
        raise SystemExit("error: mmdebstrap is not installed (`make deps` installs it from Debian)")
    if os.geteuid() != 0:
        raise SystemExit("error: building the base image needs root (mmdebstrap --mode=root, podman)")
    mirror, security = host_mirrors()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = BASE_TARBALL.with_suffix(".tar.tmp")
    cmd = [exe, "--variant=minbase", "--mode=root", "--format=tar",
           # merged /usr without the usrmerge package (which pulls in perl)
           "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
           *(f"--dpkgopt={o}" for o in DPKG_EXCLUDES),
           "--aptopt=Acquire::Languages \"none\"",
           SUITE, str(tmp),
           f"deb {mirror} {SUITE} main", f"deb {mirror} {SUITE}-updates main",
           f"deb {security} {SUITE}-security main"]
    print(f"base: mmdebstrap {SUITE} minbase from {mirror}", flush=True)
    started = time.monotonic()
    try:
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.rename(BASE_TARBALL)
    print(f"base: {BASE_TARBALL.relative_to(ROOT)} in {time.monotonic() - started:.0f} s", flush=True)
    return BASE_TARBALL


def local_base(refresh: bool) -> str:
    if refresh or podman("image", "exists", LOCAL_BASE, check=False).returncode != 0:
        tar = base_tarball(refresh)
        podman("import", "--quiet", "--change", 'CMD ["bash"]',
               "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               str(tar), LOCAL_BASE, capture=True)
        print(f"base: imported as {LOCAL_BASE}", flush=True)
    return LOCAL_BASE


def build_wheels() -> Path:
    """nstrack's wheel (with the BPF objects) and its dependencies' wheels, built on this host."""
    objs = sorted((ROOT / "nstrack" / "_bpf").glob("*.bpf.o"))
    if not objs:
        raise SystemExit("error: no nstrack/_bpf/*.bpf.o: run `make bpf` first")
    src = BUILD / "src"
    wheels = CONTEXT / "wheels"
    for d in (src, wheels):
        shutil.rmtree(d, ignore_errors=True)
    wheels.mkdir(parents=True)
    # build from a copy of what the wheel needs: no stale build/lib, no egg-info written into the tree
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "nstrack", src / "nstrack", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # fixed timestamps (zip entries and files): the same sources give the same bytes, so podman's layer cache
    # keeps the install layer until something really changed
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "-w", str(wheels),
                    str(src)], check=True, stdin=subprocess.DEVNULL, env=env)
    for whl in wheels.iterdir():
        os.utime(whl, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
    ours = list(wheels.glob("nstrack-*.whl"))
    assert len(ours) == 1, ours
    names = set(zipfile.ZipFile(ours[0]).namelist())
    missing = [o.name for o in objs if f"nstrack/_bpf/{o.name}" not in names]
    if missing:
        raise SystemExit(f"error: {ours[0].name} lacks {missing}")
    print(f"wheels: {', '.join(sorted(p.name for p in wheels.iterdir()))}", flush=True)
    return wheels


def build(tag: str, base: str | None, refresh_base: bool, no_cache: bool) -> str:
    started = time.monotonic()
    write_config()
    pull = "missing" if base else "never"
    base = base or local_base(refresh_base)
    build_wheels()
    args = ["build", "--network=host", f"--pull={pull}", "--build-arg", f"BASE={base}",
            "-f", str(CONTAINERFILE), "-t", tag]
    if no_cache:
        args.append("--no-cache")
    podman(*args, str(CONTEXT))
    # old builds of the tag, now untagged, in the private storage
    podman("image", "prune", "-f", capture=True)
    print(f"image: {tag} from {base} in {time.monotonic() - started:.0f} s", flush=True)
    return tag


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--tag", default=default_tag(), help="image name (default: %(default)s)")
    p.add_argument("--base", default=os.environ.get("NSTRACK_IMAGE_BASE") or None,
                   help="base image to build on, e.g. docker.io/library/debian:bookworm-slim (pulled if missing); "
                        f"default: {LOCAL_BASE}, built here with mmdebstrap")
    p.add_argument("--refresh-base", action="store_true", help="rebuild the cached local base from the mirror")
    p.add_argument("--no-cache", action="store_true", help="rebuild every layer (fresh apt-get)")
    p.add_argument("--print-env", action="store_true",
                   help="print the CONTAINERS_CONF and CONTAINERS_STORAGE_CONF settings to use this storage, then exit")
    a = p.parse_args(argv)
    if a.print_env:
        env = podman_env()
        for k in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF"):
            print(f"export {k}={env[k]}")
        return 0
    build(a.tag, a.base, a.refresh_base, a.no_cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
