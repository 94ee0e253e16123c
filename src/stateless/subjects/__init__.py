"""Erasure on request: every row of one app keyed by a subject's identifiers, deleted now."""
