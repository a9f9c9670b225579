"""Hydra configs of the harness (configs/ in the source tree, harness.configs when installed)."""
