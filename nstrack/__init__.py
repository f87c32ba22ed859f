"""nstrack: an eBPF-backed live tracker of every Linux namespace on a host."""

__version__ = "0.1.0"
