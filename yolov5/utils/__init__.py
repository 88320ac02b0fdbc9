"""Utilities of the trainer, one module per concern (upstream paths such as utils.general re-export them)."""
