#!/usr/bin/env python3
"""Write nstrack/kernel/bpf_names.py from the compiled BPF objects (run by `make bpf`).

For each object (``nstrack/_bpf/NAME.bpf.o``) a class with its programs (``prog``: name -> section),
maps (``maps``) and global variables (``glob``: .bss, .data, .rodata) as ``Final`` string attributes.
Python code names them through it (``EVENTS.maps.young``), so that a program, map or global renamed or
dropped in C is an AttributeError when the module that uses it is imported, which every unit test does,
and a mypy error; not an ENOENT at attach time on one kernel.

Usage: PYTHONPATH=. python3 bpf/gen_names.py OUT.py OBJECT.bpf.o...  (standard library and nstrack's
libbpf binding only: it opens the objects, which needs no privileges and no kernel).
"""

from __future__ import annotations

import sys
from pathlib import Path

from nstrack.kernel.libbpf import BPFError, BPFObject

SECTIONS = (".bss", ".data", ".rodata")


def describe(path: Path) -> tuple[dict[str, str], list[str], list[str]]:
    """(program name -> section, map names, global names) of one object."""
    with BPFObject.open(path) as obj:
        programs = {p.name: p.section for p in obj.programs()}
        maps = sorted(m.name for m in obj.maps() if not m.name.startswith(".") and "." not in m.name)
        globs: list[str] = []
        for section in SECTIONS:
            try:
                globs += obj._datasec_vars(section)
            except BPFError:  # no such section in this object
                continue
    return dict(sorted(programs.items())), maps, sorted(set(globs))


def render(objects: list[Path]) -> str:
    out = [
        '"""Names in the compiled BPF objects: written by `make bpf` (bpf/gen_names.py) from the objects',
        "themselves. Do not edit; not committed.",
        "",
        "Each object's programs (``prog``), maps (``maps``) and globals (``glob``) as attributes: a wrong",
        'name in nstrack is an AttributeError when its module is imported, and a mypy error."""',
        "",
        "from typing import Final",
        "",
    ]
    for path in objects:
        name = path.name.removesuffix(".bpf.o")
        programs, maps, globs = describe(path)
        out += ["", f"class {name.upper()}:", f'    """{path.name}"""', "", '    OBJECT: Final = "' + name + '"',
                "    # every program's section (its attach type and target), by name",
                "    SECTIONS: Final[dict[str, str]] = {"]
        out += [f"        {p!r}: {s!r}," for p, s in programs.items()]
        out += ["    }", "", "    class prog:"]
        out += [f"        {p}: Final = {p!r}" for p in programs] or ["        pass"]
        out += ["", "    class maps:"]
        out += [f"        {m}: Final = {m!r}" for m in maps] or ["        pass"]
        out += ["", "    class glob:"]
        out += [f"        {g}: Final = {g!r}" for g in globs] or ["        pass"]
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    target, objects = Path(argv[0]), [Path(a) for a in argv[1:]]
    text = render(objects)
    if not target.exists() or target.read_text() != text:
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
