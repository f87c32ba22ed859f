"""``nstrack doctor``: what was probed, what attached, which mode runs and what it cannot see.

Sample (this project's own hardened 6.18 machines)::

    nstrack doctor: kernel 6.18.44, libbpf 1.1, lockdown integrity
    probes:
      btf         ok       kernel BTF loaded (/sys/kernel/btf/vmlinux)
      fentry      REFUSED  EPERM: BPF trampolines refused before verification (security policy or sandbox)
      ...
    mode: tracepoint
"""

from __future__ import annotations

from ..kernel.probe import Findings


def render(f: Findings) -> str:
    d = f.decision
    out = [f"nstrack doctor: kernel {f.kernel}, libbpf {f.libbpf}, lockdown {f.lockdown}"]
    out.append(f"capabilities: {', '.join(f.caps) or 'none'}")
    out.append("probes (each loaded, attached and triggered for real):")
    for name, r in f.probes.items():
        status = "ok" if r.ok else "REFUSED"
        out.append(f"  {name:<11} {status:<8} {r.reason}")
    out.append(f"listns(2): {'present' if f.listns else 'absent (Linux 6.19+)'}")
    out.append("namespace hooks (create / destroy):")
    for t in f.hooks_btf:
        b, k = f.hooks_btf[t], f.hooks_kallsyms[t]
        out.append(
            f"  {t:<7} BTF: {b['create'] or '-'} / {b['destroy'] or '-'}"
            f"   kallsyms: {k['create'] or '-'} / {k['destroy'] or '-'}"
        )
    out.append("")
    out.append(f"mode: {d.mode}")
    out.append(f"  {d.limits}")
    fallback = sorted(t for t, m in d.per_type.items() if m != d.mode)
    if fallback:
        out.append(f"  types without {d.mode} hooks, tracked by rescans instead: {', '.join(fallback)}")
    for m, why in d.why_not.items():
        out.append(f"  not {m}: {why}")
    if d.upgrade:
        out.append("to get a better mode:")
        out.extend(f"  - {u}" for u in d.upgrade)
    from ..kernel.caps import RUNTIME_CAPS, STARTUP_CAPS

    out.append("privileges of `nstrack serve`:")
    out.extend(f"  at start {c}: {why}" for c, why in STARTUP_CAPS.items() if c not in RUNTIME_CAPS)
    out.extend(f"  kept     {c}: {why}" for c, why in RUNTIME_CAPS.items())
    out.append("  every other capability is dropped after attaching (--keep-caps keeps them)")
    if f.notes:
        out.append("notes:")
        out.extend(f"  - {n}" for n in f.notes)
    return "\n".join(out)
