"""tests/gpu holds a script run by hand on a CUDA machine (see README.md), not pytest tests."""
collect_ignore_glob = ["*.py"]
