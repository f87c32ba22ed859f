"""The ring-buffer record parser (the layout of include/uapi/linux/bpf.h's BPF ring buffer records)."""

from __future__ import annotations

import struct

from nstrack.kernel.libbpf import RINGBUF_BUSY, RINGBUF_DISCARD, parse_ring_span


def rec(payload: bytes, flags: int = 0, pg_off: int = 0) -> bytes:
    pad = -(len(payload) + 8) % 8
    return struct.pack("<II", len(payload) | flags, pg_off) + payload + b"\0" * pad


def test_uniform_records_split_in_order_whatever_their_page_offsets() -> None:
    payloads = [bytes([i]) * 40 for i in range(100)]
    span = b"".join(rec(p, pg_off=i * 7) for i, p in enumerate(payloads))
    assert parse_ring_span(span) == (len(span), payloads)
    assert parse_ring_span(span, records=False) == (len(span), [])


def test_mixed_sizes_with_padding() -> None:
    payloads = [b"a" * 3, b"b" * 40, b"c" * 13, b"d" * 8, b""]
    span = b"".join(rec(p) for p in payloads)
    assert parse_ring_span(span) == (len(span), payloads)


def test_stops_at_the_first_busy_record_and_skips_discarded_ones() -> None:
    done = rec(b"x" * 40) + rec(b"y" * 40, RINGBUF_DISCARD) + rec(b"z" * 40)
    span = done + rec(b"w" * 40, RINGBUF_BUSY) + rec(b"v" * 40)
    assert parse_ring_span(span) == (len(done), [b"x" * 40, b"z" * 40])
    # a uniform-looking span whose first record is still busy yields nothing
    busy_first = rec(b"q" * 40, RINGBUF_BUSY) + rec(b"r" * 40)
    assert parse_ring_span(busy_first) == (0, [])


def test_truncated_or_empty_spans_never_read_past_the_end() -> None:
    assert parse_ring_span(b"") == (0, [])
    assert parse_ring_span(b"\x28\0\0") == (0, [])
    whole = rec(b"k" * 16)
    cut = whole + rec(b"m" * 40)[:20]
    assert parse_ring_span(cut) == (len(whole), [b"k" * 16])
