"""Governance: the promotion gate (`gate`), model cards (`cards`), the model registry and its
champion alias (`registry`), and Bentos built and validated before promotion (`bento`)."""
