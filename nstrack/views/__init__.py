"""Views over the replica and the probe findings: CLI text, JSON, HTTP, metrics."""
