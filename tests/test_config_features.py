"""Config keys of the client-visible features: `taildrop.enabled` and `node.routes.ha.*`."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pyheadscale.config import ConfigError, build_config


def test_defaults_are_headscales() -> None:
    config = build_config({})
    assert config.taildrop.enabled is True
    assert config.node.routes.ha.probe_interval == timedelta(seconds=10)
    assert config.node.routes.ha.probe_timeout == timedelta(seconds=5)


def test_probe_interval_zero_turns_probing_off() -> None:
    config = build_config({"node": {"routes": {"ha": {"probe_interval": "0", "probe_timeout": "0"}}}})
    assert config.node.routes.ha.probe_interval == timedelta(0)


@pytest.mark.parametrize(
    ("ha", "message"),
    [
        ({"probe_interval": "1s"}, r"node.routes.ha: probe_interval \(1s\) must be 0 \(off\) or at least 2s"),
        ({"probe_timeout": "500ms"}, r"probe_timeout \(0.5s\) must be at least 1s"),
        ({"probe_interval": "5s", "probe_timeout": "5s"}, r"must be less than probe_interval \(5s\)"),
        ({"probe_interval": "soon"}, r"node.routes.ha.probe_interval: 'soon' is not a duration"),
    ],
)
def test_bad_probe_settings_name_the_key(ha: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config({"node": {"routes": {"ha": ha}}})
