"""Utilities, one module per concern (see docs/ARCHITECTURE in the shared docs)."""
