"""Wire-type tests run some messages through a live server: the control-plane harness's fixtures."""

from tests.control.conftest import make_harness  # noqa: F401  (fixture)
