"""`mesh router` flags reach the router's configuration, and bad ones are refused."""

import pytest

from mesh.cli import build_parser, router_config


def parse(*args: str):
    return build_parser().parse_args(["router", *args])


def test_write_coalescing_window_reaches_the_registry_settings():
    config = router_config(parse("--write-coalesce-ms", "0.5", "--silence-timeout-s", "4"))
    assert config.registry.write_coalesce_s == pytest.approx(0.0005)
    assert config.registry.silence_timeout_s == 4
    assert router_config(parse("--write-coalesce-ms", "0")).registry.write_coalesce_s == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--write-coalesce-ms", "-1"],
        ["--write-coalesce-ms", "nan"],
        ["--port", "70000"],
        ["--silence-timeout-s", "0"],
    ],
)
def test_bad_router_flags_exit_with_usage(args, capsys):
    with pytest.raises(SystemExit) as exited:
        parse(*args)
    assert exited.value.code == 2
    assert "error: argument" in capsys.readouterr().err
