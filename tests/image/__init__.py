"""The container image (deploy/container/): built with podman on the host only (the VM matrix does not run this)."""
