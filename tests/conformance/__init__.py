"""The cross-driver conformance suite (see tests/README.md)."""
