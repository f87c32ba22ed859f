"""What is particular to the one architecture nstrack builds for (x86-64), in one place.

The BPF objects are compiled with ``-D__TARGET_ARCH_x86`` against ``bpf/vmlinux.h`` dumped on x86-64
(``ARCH`` in the Makefile), kprobe arguments are read from x86-64's ``pt_regs``, and Python reads BPF's
records and ring pages as little-endian machine words with x86-64's ordering of aligned 8-byte loads
(``bpfsys.RingBuffer``). Another architecture needs its own vmlinux.h, ``ARCH`` and the numbers below.
"""

from __future__ import annotations

MACHINE = "x86_64"  # os.uname().machine of the hosts nstrack runs on
SYS_BPF = 321  # bpf(2)
SYS_LISTNS = 470  # listns(2), Linux 6.19+
