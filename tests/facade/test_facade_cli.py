"""The CLI pieces: flags, their errors, and the config they build."""

from __future__ import annotations

import argparse

import pytest

from http_facade import FacadeConfig, add_facade_arguments, facade_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mesh facade")
    add_facade_arguments(parser)
    return parser


def test_defaults_and_router_list(monkeypatch):
    monkeypatch.delenv("SIE_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("SIE_ADMIN_TOKEN", "adm")
    args = _parser().parse_args(["--router", "r1:50051,r2:50051"])
    assert (args.host, args.port, args.router) == ("0.0.0.0", 8080, ["r1:50051", "r2:50051"])
    config = facade_config(args)
    assert config == FacadeConfig(admin_token="adm")


def test_limits_flow_into_the_config(monkeypatch):
    monkeypatch.delenv("SIE_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("SIE_ADMIN_TOKEN", raising=False)
    args = _parser().parse_args(
        [
            "-p",
            "9000",
            "--router",
            "r:1",
            "--request-timeout-s",
            "30",
            "--max-body-bytes",
            "1000",
            "--max-items",
            "64",
        ]
    )
    config = facade_config(args)
    assert args.port == 9000
    assert (config.request_timeout_s, config.max_body_bytes, config.max_items) == (30.0, 1000, 64)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--router"),
        (["--router", "nohost"], "HOST:PORT"),
        (["--router", "h:99999"], "port"),
        (["--router", "h:1", "--port", "70000"], "port"),
        (["--router", ","], "no router address"),
        (["--router", "h:1", "--port", "http"], "port"),
        (["--router", "h:1", "--request-timeout-s", "0"], "positive"),
        (["--router", "h:1", "--request-timeout-s", "soon"], "not a number"),
        (["--router", "h:1", "--request-timeout-s", "inf"], "finite"),
        (["--router", "h:1", "--max-items", "-3"], "positive integer"),
        (["--router", "h:1", "--drain-s", "-1"], "non-negative"),
    ],
)
def test_bad_flags_are_argparse_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs",
    [{"request_timeout_s": 0}, {"max_items": 0}, {"max_body_bytes": -1}, {"cluster_status_interval_s": -1.0}],
)
def test_config_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):
        FacadeConfig(**kwargs)
