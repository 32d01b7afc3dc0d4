"""Command-line flags shared by `mesh router` and `mesh worker`: where etcd is.

Each flag falls back to an environment variable, so a Kubernetes manifest can
set them once for every container. A bad value -- on the command line or in
the environment -- is an argparse error (exit 2) naming both, never a
traceback.
"""

from __future__ import annotations

import argparse
import os

from mesh.coordination import DEFAULT_PREFIX, parse_etcd_url
from mesh.coordination.store import normalize_prefix

ETCD_URL_ENV = "MESH_ETCD_URL"
ETCD_PREFIX_ENV = "MESH_ETCD_PREFIX"
ADVERTISE_ADDRESS_ENV = "MESH_ADVERTISE_ADDRESS"


def etcd_url(text: str) -> str:
    """`http://h:2379[,h2:2379...]`, checked; returned as given."""
    try:
        parse_etcd_url(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error} (from --etcd or ${ETCD_URL_ENV})") from None
    return text.strip()


def store_prefix(text: str) -> str:
    try:
        return normalize_prefix(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error} (from --etcd-prefix or ${ETCD_PREFIX_ENV})") from None


def dial_address(text: str) -> str:
    """`host:port` or `[v6]:port` that a peer can dial."""
    address = text.strip()
    host, separator, port = address.rpartition(":")
    if (
        not separator
        or not host
        or host == "[]"
        or (":" in host and not (host.startswith("[") and host.endswith("]")))
        or not port.isdigit()
        or not 0 < int(port) < 65536
    ):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not HOST:PORT (IPv6 as [addr]:port) (from --advertise-address or ${ADVERTISE_ADDRESS_ENV})"
        )
    return address


def _env(name: str) -> str | None:
    # An empty variable means "not set", as shells and manifests tend to leave them.
    return os.environ.get(name, "").strip() or None


class _StoreAndSatisfy(argparse.Action):
    """Stores the value, and makes another (required) flag optional: argparse has no "A or B"."""

    def __init__(self, *args: object, satisfies: argparse.Action | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._satisfies = satisfies

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        if self._satisfies is not None:
            self._satisfies.required = False


def add_etcd_arguments(
    parser: argparse.ArgumentParser, *, what: str, satisfies: argparse.Action | None = None
) -> None:
    """`--etcd` and `--etcd-prefix`; `what` says in the help what etcd is for.

    `satisfies`: a flag that is required unless `--etcd` is given.
    """
    group = parser.add_argument_group("shared state (etcd)")
    group.add_argument(
        "--etcd",
        action=_StoreAndSatisfy,
        satisfies=satisfies,
        type=etcd_url,
        default=_env(ETCD_URL_ENV),
        metavar="http://HOST:2379[,HOST:2379...]",
        help=f"etcd endpoints {what} (env ${ETCD_URL_ENV})",
    )
    group.add_argument(
        "--etcd-prefix",
        type=store_prefix,
        default=_env(ETCD_PREFIX_ENV) or DEFAULT_PREFIX,
        metavar="PREFIX",
        help=f"key prefix of this mesh in etcd, so meshes can share one (env ${ETCD_PREFIX_ENV}; "
        f"default: {DEFAULT_PREFIX})",
    )


def add_advertise_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--advertise-address",
        type=dial_address,
        default=_env(ADVERTISE_ADDRESS_ENV),
        metavar="HOST:PORT",
        help=f"address workers dial to reach this replica, published in etcd (env ${ADVERTISE_ADDRESS_ENV}; "
        "default: --host:--port, or this host's address when --host is a wildcard)",
    )
