"""pytest fixtures for the stand-in mlu device (registered by tests/conftest.py).

Loading the stand-in renames torch's PrivateUse1 backend to 'mlu' for the rest of the process,
which the torch_mlu API double (tests/mlu_double.py) must not see. So every test that uses the
`standin_mlu` fixture is moved to the end of the session, after the double's tests.
"""
import pytest

from . import loader


_build_error = []


@pytest.fixture(scope="session")
def standin_mlu():
    """torch.mlu of the stand-in: built on first use (cached across sessions), loaded once."""
    if _build_error:
        pytest.fail(f"the stand-in mlu device did not build: {_build_error[0]}")
    return loader.load()


@pytest.fixture
def standin_counters(standin_mlu):
    """counters() -> dict, reset at the start of the test."""
    loader.reset_counters()
    return loader.counters


def pytest_collection_modifyitems(config, items):
    uses = {id(item) for item in items if "standin_mlu" in getattr(item, "fixturenames", ())}
    items[:] = [i for i in items if id(i) not in uses] + [i for i in items if id(i) in uses]
    if uses:  # before any test runs a backward pass (see loader.load_library)
        try:
            loader.load_library()
        except Exception as e:  # the stand-in's tests fail with this; the others still run
            _build_error.append(f"{type(e).__name__}: {e}")
