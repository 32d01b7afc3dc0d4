"""`--etcd`, `--etcd-prefix`, `--advertise-address` and their environment variables."""

from __future__ import annotations

import argparse

import pytest

from mesh.cli import build_parser, router_config
from worker_agent.cli import add_worker_arguments, agent_config_from_args

pytestmark = pytest.mark.timeout(10)


def worker_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="worker")
    add_worker_arguments(parser)
    return parser


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("MESH_ETCD_URL", "MESH_ETCD_PREFIX", "MESH_ADVERTISE_ADDRESS"):
        monkeypatch.delenv(name, raising=False)


def test_router_flags_reach_the_router_config():
    args = build_parser().parse_args(
        [
            "router",
            "--etcd",
            "http://10.0.0.1:2379,10.0.0.2:2379",
            "--etcd-prefix",
            "/prod",
            "--advertise-address",
            "router-0.routers:50051",
            "--lease-ttl-s",
            "7",
        ]
    )
    config = router_config(args)
    assert config.etcd_url == "http://10.0.0.1:2379,10.0.0.2:2379"
    assert config.store_prefix == "/prod/"
    assert config.advertise_address == "router-0.routers:50051"
    assert config.replica.lease_ttl_s == 7.0


def test_router_flags_default_to_one_router_in_memory():
    config = router_config(build_parser().parse_args(["router"]))
    assert config.etcd_url is None and config.store_prefix == "/mesh/" and config.advertise_address == ""


def test_environment_variables_stand_in_for_the_flags(monkeypatch):
    monkeypatch.setenv("MESH_ETCD_URL", "http://etcd:2379")
    monkeypatch.setenv("MESH_ETCD_PREFIX", "/staging/")
    monkeypatch.setenv("MESH_ADVERTISE_ADDRESS", "10.1.2.3:50051")
    config = router_config(build_parser().parse_args(["router"]))
    assert (config.etcd_url, config.store_prefix, config.advertise_address) == (
        "http://etcd:2379",
        "/staging/",
        "10.1.2.3:50051",
    )
    # The flag wins over the environment.
    args = build_parser().parse_args(["router", "--etcd", "http://other:2379"])
    assert args.etcd == "http://other:2379"


@pytest.mark.parametrize(
    ("argv", "environment", "message"),
    [
        (["--etcd", "etcd:2379"], {}, "must start with http://"),
        (["--etcd", "https://etcd:2379"], {}, "TLS (https) is not supported"),
        (["--etcd", "http://etcd:99999"], {}, "port must be a number"),
        (["--etcd", "http://etcd:2379,,"], {}, "empty endpoint"),
        (["--etcd-prefix", "/"], {}, "must name a namespace"),
        (["--advertise-address", "router-0"], {}, "is not HOST:PORT"),
        (["--advertise-address", "::1:50051"], {}, "is not HOST:PORT"),
        ([], {"MESH_ETCD_URL": "etcd:2379"}, "$MESH_ETCD_URL"),
        ([], {"MESH_ETCD_PREFIX": "/"}, "$MESH_ETCD_PREFIX"),
    ],
)
def test_bad_values_are_usage_errors_naming_flag_and_variable(
    argv, environment, message, monkeypatch, capsys
):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["router", *argv])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_router_help_documents_the_environment_variables(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["router", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("$MESH_ETCD_URL", "$MESH_ETCD_PREFIX", "$MESH_ADVERTISE_ADDRESS"):
        assert name in text


def test_a_worker_needs_a_router_or_etcd(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        worker_parser().parse_args([])
    assert exit_info.value.code == 2
    assert "the following arguments are required: --router" in capsys.readouterr().err

    config = agent_config_from_args(
        worker_parser().parse_args(["--etcd", "http://etcd:2379", "--etcd-prefix", "/p"])
    )
    assert config.routers == () and config.etcd_url == "http://etcd:2379" and config.etcd_prefix == "/p/"

    monkeypatch.setenv("MESH_ETCD_URL", "http://etcd:2379")
    config = agent_config_from_args(worker_parser().parse_args([]))
    assert config.etcd_url == "http://etcd:2379"


def test_worker_router_specs_mix_addresses_and_dns_names():
    args = worker_parser().parse_args(
        ["--router", "r1:7070,dns:///routers.mesh.svc:50051", "--dns-refresh-s", "2"]
    )
    config = agent_config_from_args(args)
    assert config.discovery.static == ("r1:7070",)
    assert [str(name) for name in config.discovery.dns] == ["dns:///routers.mesh.svc:50051"]
    assert config.discovery.dns_refresh_s == 2.0
