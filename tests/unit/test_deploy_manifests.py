"""The deployment manifests agree with the code they run.

Every container that runs `mesh` is parsed by the real CLI parser
(`mesh.cli.build_parser`), with the container's own environment; the ports
its probes and Services target are the ones it declares and the ones its
flags bind; gRPC probes and health checks name services the code registers;
HTTP probes use routes the facade serves; environment names are the ones
the code reads. Names come from the code's constants, so renaming a flag, a
health service, a route or an environment variable there fails here rather
than in a cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from http_facade.config import ADMIN_TOKEN_ENV, AUTH_TOKEN_ENV
from http_facade.routes import ROUTES, Access
from mesh.cli import build_parser
from mesh.config_api.settings import CONFIG_RESTORE_ENV, CONFIG_STORE_DIR_ENV
from mesh.coordination import parse_etcd_url
from mesh.ha import split_router_specs
from mesh.ha.flags import ADVERTISE_ADDRESS_ENV, ETCD_PREFIX_ENV, ETCD_URL_ENV
from mesh.router import INFERENCE_SERVICE, REGISTRY_SERVICE
from worker_agent.health import LIVENESS_SERVICE, READINESS_SERVICE

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_DIR = DEPLOY / "kubernetes"
KUSTOMIZATION = K8S_DIR / "kustomization.yaml"
COMPOSE_FILE = DEPLOY / "compose" / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"

MESH_IMAGE = "inference-mesh"
"""Repository name of the image built from deploy/Dockerfile (its ENTRYPOINT is `mesh`)."""

CODE_ENV = frozenset(
    {
        AUTH_TOKEN_ENV,
        ADMIN_TOKEN_ENV,
        CONFIG_STORE_DIR_ENV,
        CONFIG_RESTORE_ENV,
        ETCD_URL_ENV,
        ETCD_PREFIX_ENV,
        ADVERTISE_ADDRESS_ENV,
    }
)
"""Environment variables the mesh reads. Any other name in a manifest is only
a helper for Kubernetes' $(NAME) expansion and must be referenced that way."""

# grpc.health.v1's name for "the server as a whole" is the empty string; the
# router registers it by that literal (there is no constant for it in mesh.router).
ROUTER_LIVENESS_SERVICE = ""
HEALTH_SERVICES = {
    "router": frozenset({ROUTER_LIVENESS_SERVICE, INFERENCE_SERVICE, REGISTRY_SERVICE}),
    "worker": frozenset({LIVENESS_SERVICE, READINESS_SERVICE}),
}
LIVENESS = {"router": ROUTER_LIVENESS_SERVICE, "worker": LIVENESS_SERVICE}
READINESS = {"router": INFERENCE_SERVICE, "worker": READINESS_SERVICE}

ROUTE_PATHS = {route.name: route.path for route in ROUTES}
OPEN_GET_PATHS = frozenset(
    route.path for route in ROUTES if route.access is Access.OPEN and route.method == "GET"
)

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")

# What the downward API hands a container, for $(NAME) expansion.
FIELD_SAMPLES = {
    "status.podIP": "10.0.0.7",
    "status.hostIP": "10.0.1.1",
    "metadata.namespace": "inference-mesh",
    "spec.nodeName": "gpu-node-a",
}

_K8S_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_COMPOSE_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


# -- loading -------------------------------------------------------------------------


@dataclass
class MeshContainer:
    """One container that runs `mesh`, with its arguments parsed by the real CLI."""

    where: str
    argv: list[str]
    args: argparse.Namespace
    env_names: list[str]
    ports: dict[str, int]
    """Declared container ports: name (or str(number) when unnamed) -> number."""
    spec: dict[str, Any] = field(default_factory=dict)
    """The Kubernetes container spec, or the compose service."""

    @property
    def command(self) -> str:
        return self.args.command

    def grpc_ports(self) -> set[int]:
        if self.command == "router":
            return {self.args.port}
        if self.command == "worker" and self.args.health_port is not None:
            return {self.args.health_port}
        return set()

    def http_ports(self) -> set[int]:
        if self.command == "router" and self.args.http_port is not None:
            return {self.args.http_port}
        if self.command == "facade":
            return {self.args.port}
        return set()

    def bound_ports(self) -> set[int]:
        return self.grpc_ports() | self.http_ports()


def _yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@cache
def k8s_files() -> tuple[Path, ...]:
    return tuple(
        sorted(
            path for path in K8S_DIR.iterdir() if path.suffix in (".yaml", ".yml") and path != KUSTOMIZATION
        )
    )


@cache
def k8s_docs() -> tuple[tuple[str, dict[str, Any]], ...]:
    return tuple((path.name, doc) for path in k8s_files() for doc in _yaml_documents(path))


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_docs() if doc.get("kind") == kind]


def workloads() -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_docs() if doc.get("kind") in WORKLOAD_KINDS]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def name_of(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def image_repository(image: str) -> str:
    """`inference-mesh:0.1.0` or `host/path/inference-mesh:tag` -> `inference-mesh`."""
    last = image.rsplit("/", 1)[-1]
    return last.split("@", 1)[0].split(":", 1)[0]


def k8s_env(container: dict[str, Any], pod_name: str, where: str) -> dict[str, str]:
    """The container's environment as Kubernetes resolves it, with sample downward-API values."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        name = var["name"]
        if "value" in var:
            env[name] = k8s_expand(str(var["value"]), env, f"{where} env {name}")
            continue
        source = var.get("valueFrom", {})
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            env[name] = pod_name if path == "metadata.name" else FIELD_SAMPLES[path]
        elif "secretKeyRef" in source:
            env[name] = f"secret-{source['secretKeyRef']['key']}"
        elif "configMapKeyRef" in source:
            env[name] = f"config-{source['configMapKeyRef']['key']}"
        else:
            pytest.fail(f"{where}: env {name} has a source this test does not know: {source}")
    return env


def k8s_expand(text: str, env: dict[str, str], where: str) -> str:
    """Kubernetes' $(NAME) expansion; a reference to no variable is a mistake here."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            pytest.fail(f"{where}: $({name}) refers to no env var defined before it in the container")
        return env[name]

    return _K8S_REF.sub(substitute, text.replace("$$", "\0")).replace("\0", "$")


def compose_interpolate(text: str) -> str:
    """Compose's ${VAR:-default} as it reads with VAR unset."""
    return _COMPOSE_REF.sub(lambda match: match.group(2) or "", text)


@contextlib.contextmanager
def process_environment(env: dict[str, str]) -> Iterator[None]:
    """os.environ as the container sees it, for the names the mesh reads (build_parser reads them)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in CODE_ENV:
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        yield


def parse_mesh(argv: list[str], env: dict[str, str], where: str) -> argparse.Namespace:
    """`mesh ARGV` through the real parser; a parse error fails the test with argparse's message."""
    stderr = io.StringIO()
    with process_environment(env):
        parser = build_parser()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                args = parser.parse_args(argv)
        except SystemExit as exit_:
            # argparse prints the usage first and the reason last.
            lines = stderr.getvalue().strip().splitlines() or ["(no message)"]
            pytest.fail(
                f"{where}: mesh.cli.build_parser() refuses it (exit {exit_.code}): {lines[-1]}\n"
                f"  mesh {shlex.join(argv)}"
            )
    assert args.command in ("router", "worker", "facade"), f"{where}: runs `mesh {args.command}`"
    return args


def container_ports(container: dict[str, Any]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for port in container.get("ports", []):
        number = int(port["containerPort"])
        ports[port.get("name", str(number))] = number
    return ports


def k8s_mesh_entries() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container running the mesh image."""
    return [
        (workload, container)
        for workload in workloads()
        for container in pod_spec(workload)["containers"]
        if image_repository(container["image"]) == MESH_IMAGE
    ]


def k8s_container_ids() -> list[str]:
    return [
        f"{workload['metadata']['name']}/{container['name']}" for workload, container in k8s_mesh_entries()
    ]


def load_k8s_mesh_container(workload: dict[str, Any], container: dict[str, Any]) -> MeshContainer:
    where = f"{name_of(workload)} container {container['name']}"
    env = k8s_env(container, f"{workload['metadata']['name']}-0", where)
    command = [k8s_expand(str(part), env, where) for part in container.get("command", [])]
    args = [k8s_expand(str(part), env, where) for part in container.get("args", [])]
    if command:
        assert command[0] == "mesh", f"{where}: command {command} does not run mesh"
        argv = command[1:] + args
    else:
        argv = args  # the image's ENTRYPOINT is `mesh` (test_the_image_entrypoint_is_mesh...)
    return MeshContainer(
        where=where,
        argv=argv,
        args=parse_mesh(argv, env, where),
        env_names=[var["name"] for var in container.get("env", [])],
        ports=container_ports(container),
        spec=container,
    )


@cache
def k8s_mesh_containers() -> tuple[MeshContainer, ...]:
    return tuple(load_k8s_mesh_container(workload, container) for workload, container in k8s_mesh_entries())


def mesh_container(component: str) -> list[MeshContainer]:
    return [container for container in k8s_mesh_containers() if container.command == component]


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(entry.split("=", 1) if "=" in entry else (entry, "") for entry in environment)
    return {name: compose_interpolate(str(value or "")) for name, value in environment.items()}


def compose_argv(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def compose_published_ports(service: dict[str, Any]) -> set[int]:
    """Container-side ports of `ports:` entries (short syntax `[ip:]host:container`)."""
    ports = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/", 1)[0].rsplit(":", 1)[-1]))
    return ports


def compose_mesh_entries() -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, service)
        for name, service in compose_services().items()
        if image_repository(compose_interpolate(service.get("image", ""))) == MESH_IMAGE
    ]


def compose_service_ids() -> list[str]:
    return [name for name, _ in compose_mesh_entries()]


def load_compose_mesh_container(name: str, service: dict[str, Any]) -> MeshContainer:
    where = f"compose service {name}"
    assert "entrypoint" not in service, f"{where}: keep the image's `mesh` entrypoint"
    env = compose_env(service)
    argv = compose_argv(service)
    return MeshContainer(
        where=where,
        argv=argv,
        args=parse_mesh(argv, env, where),
        env_names=list(env),
        ports={str(port): port for port in compose_published_ports(service)},
        spec=service,
    )


@cache
def compose_mesh_containers() -> tuple[MeshContainer, ...]:
    return tuple(load_compose_mesh_container(name, service) for name, service in compose_mesh_entries())


def flag_values(argv: list[str], flag: str) -> list[str]:
    """Values of `--flag=V` / `--flag V` in a non-mesh command line (etcd's)."""
    values = []
    for index, part in enumerate(argv):
        if part.startswith(f"{flag}="):
            values.append(part.split("=", 1)[1])
        elif part == flag and index + 1 < len(argv):
            values.append(argv[index + 1])
    return values


def one_flag(argv: list[str], flag: str, where: str) -> str:
    values = flag_values(argv, flag)
    assert len(values) == 1, f"{where}: expected one {flag}, found {values}"
    return values[0]


def url_ports(urls: str) -> set[int]:
    return {urlsplit(url.strip()).port for url in urls.split(",")}


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


# -- Kubernetes: the kustomization and the files -------------------------------------


def test_kustomization_lists_every_manifest_file() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    listed = kustomization.get("resources", [])
    assert len(listed) == len(set(listed)), f"listed twice: {listed}"
    on_disk = {path.name for path in k8s_files()}
    assert set(listed) == on_disk, (
        f"not in kustomization.yaml: {sorted(on_disk - set(listed))}; "
        f"listed but missing: {sorted(set(listed) - on_disk)}"
    )
    namespaces = [doc["metadata"]["name"] for doc in k8s_kind("Namespace")]
    assert namespaces == [kustomization.get("namespace")], "the kustomization's namespace is the one created"


def test_every_manifest_is_a_named_kubernetes_resource() -> None:
    assert k8s_docs(), "no manifests found"
    for file_name, doc in k8s_docs():
        assert doc.get("apiVersion") and doc.get("kind"), f"{file_name}: {doc}"
        assert doc.get("metadata", {}).get("name"), f"{file_name}: {doc['kind']} has no name"
        assert "namespace" not in doc["metadata"], f"{file_name}: the kustomization sets the namespace"


def test_the_image_entrypoint_is_mesh_and_runs_as_non_root() -> None:
    """Containers that give only `args` rely on ENTRYPOINT ["mesh"]."""
    instructions = [line.split(None, 1) for line in DOCKERFILE.read_text().splitlines() if line.strip()]
    final = [i for i, parts in enumerate(instructions) if parts[0] == "FROM"][-1]
    stage = instructions[final:]
    assert stage[0][1].startswith("python:3.11-slim")
    entrypoints = [json.loads(parts[1]) for parts in stage if parts[0] == "ENTRYPOINT"]
    assert entrypoints == [["mesh"]]
    users = [parts[1].split(":")[0] for parts in stage if parts[0] == "USER"]
    assert users and users[-1] not in ("0", "root"), "the image must not run as root"


# -- Kubernetes: mesh containers against the CLI -------------------------------------


@pytest.mark.parametrize("index", range(len(k8s_container_ids())), ids=k8s_container_ids())
def test_k8s_mesh_container_parses_with_the_cli(index: int) -> None:
    load_k8s_mesh_container(*k8s_mesh_entries()[index])


def test_k8s_runs_every_process_of_the_mesh() -> None:
    assert {container.command for container in k8s_mesh_containers()} == {"router", "worker", "facade"}


@pytest.mark.parametrize("index", range(len(k8s_container_ids())), ids=k8s_container_ids())
def test_k8s_declared_ports_are_the_ports_the_flags_bind(index: int) -> None:
    container = load_k8s_mesh_container(*k8s_mesh_entries()[index])
    assert set(container.ports.values()) == container.bound_ports(), (
        f"{container.where}: declares {sorted(container.ports.values())}, "
        f"its flags bind {sorted(container.bound_ports())}"
    )


def resolve_container_port(container: MeshContainer | dict[str, int], port: int | str, where: str) -> int:
    ports = container.ports if isinstance(container, MeshContainer) else container
    if isinstance(port, str) and not port.isdigit():
        assert port in ports, f"{where}: port name {port!r} is not declared (declared: {ports})"
        return ports[port]
    assert int(port) in ports.values(), f"{where}: port {port} is not declared (declared: {ports})"
    return int(port)


@pytest.mark.parametrize("index", range(len(k8s_container_ids())), ids=k8s_container_ids())
def test_k8s_probes_target_bound_ports_and_registered_health(index: int) -> None:
    container = load_k8s_mesh_container(*k8s_mesh_entries()[index])
    spec = container.spec
    assert "livenessProbe" in spec and "readinessProbe" in spec, f"{container.where}: needs both probes"
    for probe_name in PROBES:
        probe = spec.get(probe_name)
        if probe is None:
            continue
        where = f"{container.where} {probe_name}"
        if "grpc" in probe:
            port = resolve_container_port(container, probe["grpc"]["port"], where)
            assert port in container.grpc_ports(), f"{where}: gRPC port {port} is not its gRPC/health port"
            service = probe["grpc"].get("service", "")
            assert service in HEALTH_SERVICES[container.command], (
                f"{where}: health service {service!r} is not one the {container.command} registers "
                f"({sorted(HEALTH_SERVICES[container.command])})"
            )
            if probe_name == "readinessProbe":
                assert service == READINESS[container.command], f"{where}: readiness must watch {READINESS}"
            else:
                assert service == LIVENESS[container.command], f"{where}: liveness must watch {LIVENESS}"
        elif "httpGet" in probe:
            port = resolve_container_port(container, probe["httpGet"]["port"], where)
            assert port in container.http_ports(), f"{where}: HTTP port {port} is not the facade's port"
            path = probe["httpGet"]["path"]
            assert path in OPEN_GET_PATHS, f"{where}: {path} is not an open GET route of the facade"
            expected = ROUTE_PATHS["readyz"] if probe_name == "readinessProbe" else ROUTE_PATHS["healthz"]
            assert path == expected, f"{where}: expected {expected}"
        else:
            pytest.fail(f"{where}: use a grpc or httpGet probe, not {sorted(probe)}")


# -- Kubernetes: Services and the addresses in flags ---------------------------------


def selected_workloads(selector: dict[str, str]) -> list[dict[str, Any]]:
    return [w for w in workloads() if selector and selector.items() <= pod_labels(w).items()]


def service_named(name: str) -> dict[str, Any]:
    services = [doc for doc in k8s_kind("Service") if doc["metadata"]["name"] == name]
    assert services, f"no Service named {name!r}"
    return services[0]


def service_target_ports(service: dict[str, Any], port: int) -> list[tuple[str, int]]:
    """(where, container port) for every container the Service's `port` lands on."""
    entries = [entry for entry in service["spec"]["ports"] if int(entry["port"]) == port]
    assert entries, f"{name_of(service)} has no port {port}"
    target = entries[0].get("targetPort", port)
    landed = []
    for workload in selected_workloads(service["spec"].get("selector", {})):
        for container in pod_spec(workload)["containers"]:
            where = f"{name_of(service)} port {port} -> {name_of(workload)} container {container['name']}"
            if isinstance(target, str) and target not in container_ports(container):
                continue  # a named port lands only on the containers that declare it
            landed.append((where, resolve_container_port(container_ports(container), target, where)))
    assert landed, f"{name_of(service)} port {port} (target {target!r}) reaches no container"
    return landed


def test_every_service_port_reaches_a_declared_port() -> None:
    mesh_by_where = {c.where.split(" container ")[0]: c for c in k8s_mesh_containers()}
    for service in k8s_kind("Service"):
        assert selected_workloads(service["spec"].get("selector", {})), f"{name_of(service)} selects no pods"
        for entry in service["spec"]["ports"]:
            for where, container_port in service_target_ports(service, int(entry["port"])):
                workload = where.split(" -> ")[1].split(" container ")[0]
                if workload in mesh_by_where:
                    bound = mesh_by_where[workload].bound_ports()
                    assert container_port in bound, f"{where}: {container_port} is not bound ({bound})"


def router_grpc_port() -> int:
    (port,) = {router.args.port for router in mesh_container("router")}
    return port


def assert_reaches_router_grpc(address: str, where: str) -> dict[str, Any]:
    host, port = host_port(address)
    service = service_named(host.split(".")[0])
    for target_where, container_port in service_target_ports(service, port):
        assert "Deployment/router" in target_where, f"{where}: {address} reaches {target_where}"
        assert container_port == router_grpc_port(), f"{where}: {address} lands on {container_port}"
    return service


def kustomization_namespace() -> str:
    return yaml.safe_load(KUSTOMIZATION.read_text())["namespace"]


def assert_finds_routers(container: MeshContainer) -> None:
    """Each `--router` spec lands on every router pod's gRPC port; etcd is checked elsewhere."""
    assert container.args.router or container.args.etcd, f"{container.where}: no way to find the routers"
    static, names = split_router_specs(list(container.args.router))
    for address in static:
        assert_reaches_router_grpc(address, container.where)
    for name in names:
        where = f"{container.where}: {name}"
        service = assert_reaches_router_grpc(f"{name.host}:{name.port}", container.where)
        # dns:/// stands for every address: only a headless Service resolves to each pod.
        assert service["spec"].get("clusterIP") == "None", f"{where} is not headless"
        assert not service["spec"].get("publishNotReadyAddresses"), (
            f"{where}: a draining router must drop out"
        )
        # A headless name resolves to pod IPs: the client dials the container port, not a Service port.
        assert name.port == router_grpc_port(), f"{where}: routers serve gRPC on {router_grpc_port()}"
        # `svc`, `svc.ns`, `svc.ns.svc[.cluster.local]`: a namespace, if named, is the mesh's.
        labels = name.host.split(".")
        assert len(labels) == 1 or labels[1] == kustomization_namespace(), f"{where}: another namespace"


def test_workers_find_routers_through_the_headless_service_or_etcd() -> None:
    for worker in mesh_container("worker"):
        assert_finds_routers(worker)


def test_facade_keeps_a_channel_to_every_router_pod() -> None:
    (facade,) = mesh_container("facade")
    assert_finds_routers(facade)
    _, names = split_router_specs(list(facade.args.router))
    # Router pods come and go with no stable names; one static name is one channel
    # stuck on whichever pod it reached, and the facade's failover never engages.
    assert names or facade.args.etcd, f"{facade.where}: find every router pod (dns:/// or --etcd)"


def test_routers_dial_the_etcd_client_port() -> None:
    etcd = k8s_etcd_statefulset()
    client_ports = url_ports(one_flag(etcd_argv(etcd), "--listen-client-urls", "etcd"))
    for router in mesh_container("router"):
        assert router.args.etcd, f"{router.where}: HA routers share state through etcd"
        for endpoint in parse_etcd_url(router.args.etcd):
            host, port = host_port(endpoint)
            for where, container_port in service_target_ports(service_named(host.split(".")[0]), port):
                assert "StatefulSet/etcd" in where, f"{router.where}: {endpoint} reaches {where}"
                assert container_port in client_ports, f"{where}: not etcd's client port"


# -- Kubernetes: etcd ----------------------------------------------------------------


def k8s_etcd_statefulset() -> dict[str, Any]:
    (etcd,) = [doc for doc in k8s_kind("StatefulSet") if doc["metadata"]["name"] == "etcd"]
    return etcd


def etcd_argv(etcd: dict[str, Any]) -> list[str]:
    (container,) = pod_spec(etcd)["containers"]
    return [str(part) for part in container.get("command", []) + container.get("args", [])]


def test_etcd_initial_cluster_names_the_statefulset_members() -> None:
    etcd = k8s_etcd_statefulset()
    name = etcd["metadata"]["name"]
    replicas = etcd["spec"]["replicas"]
    assert replicas == 3
    assert etcd["spec"].get("podManagementPolicy") == "Parallel", (
        "members must start together to form a quorum"
    )
    headless = service_named(etcd["spec"]["serviceName"])
    assert headless["spec"].get("clusterIP") == "None"
    assert headless["spec"].get("publishNotReadyAddresses") is True, (
        "peers must resolve before they are ready"
    )

    (container,) = pod_spec(etcd)["containers"]
    argv = etcd_argv(etcd)
    declared = container_ports(container)
    peer_ports = url_ports(one_flag(argv, "--listen-peer-urls", "etcd"))
    client_ports = url_ports(one_flag(argv, "--listen-client-urls", "etcd"))
    assert set(declared.values()) == peer_ports | client_ports, (
        f"declared {declared}, bound {peer_ports | client_ports}"
    )
    (peer_port,) = peer_ports

    members = dict(entry.split("=", 1) for entry in one_flag(argv, "--initial-cluster", "etcd").split(","))
    expected = [f"{name}-{ordinal}" for ordinal in range(replicas)]
    assert list(members) == expected
    for member, url in members.items():
        parts = urlsplit(url)
        assert parts.hostname == f"{member}.{headless['metadata']['name']}", url
        assert parts.port == peer_port, url

    # As the kubelet expands it in pod etcd-1: its own member name and peer URL.
    pod_name = expected[1]
    env = k8s_env(container, pod_name, "etcd")
    expanded = [k8s_expand(part, env, "etcd") for part in argv]
    assert one_flag(expanded, "--name", "etcd") == pod_name
    assert one_flag(expanded, "--initial-advertise-peer-urls", "etcd") == members[pod_name]
    client_url = urlsplit(one_flag(expanded, "--advertise-client-urls", "etcd"))
    assert (
        client_url.hostname == f"{pod_name}.{headless['metadata']['name']}"
        and client_url.port in client_ports
    )

    for probe_name in PROBES:
        probe = container.get(probe_name)
        if probe is not None:
            port = resolve_container_port(declared, probe["httpGet"]["port"], f"etcd {probe_name}")
            assert port in client_ports and probe["httpGet"]["path"].startswith("/health")
    claims = {claim["metadata"]["name"] for claim in etcd["spec"].get("volumeClaimTemplates", [])}
    data_dir = one_flag(argv, "--data-dir", "etcd")
    mounts = [m for m in container.get("volumeMounts", []) if m["name"] in claims]
    assert any(data_dir.startswith(m["mountPath"]) for m in mounts), "the data directory must be on the claim"


# -- Kubernetes: the router's HA and draining ----------------------------------------


def disruption_budget_for(workload: dict[str, Any]) -> dict[str, Any]:
    budgets = [
        pdb
        for pdb in k8s_kind("PodDisruptionBudget")
        if pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels(workload).items()
    ]
    assert len(budgets) == 1, f"{name_of(workload)}: expected one PodDisruptionBudget, found {len(budgets)}"
    return budgets[0]


def test_every_replicated_workload_has_a_disruption_budget() -> None:
    for workload in workloads():
        budget = disruption_budget_for(workload)["spec"]
        replicas = workload["spec"].get("replicas", 1)
        if "minAvailable" in budget:
            assert 0 < budget["minAvailable"] < replicas, f"{name_of(workload)}: budget blocks every eviction"
        else:
            assert budget["maxUnavailable"] >= 1


def prestop_sleep_s(spec: dict[str, Any]) -> float:
    pre_stop = spec.get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0.0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep", f"unexpected preStop {command}"
    return float(command[1])


def test_routers_are_replicated_spread_and_drain_within_the_grace_period() -> None:
    (router_deployment,) = [w for w in workloads() if w["metadata"]["name"] == "router"]
    assert router_deployment["spec"]["replicas"] >= 2
    affinity = pod_spec(router_deployment).get("affinity", {})
    assert affinity.get("podAntiAffinity"), "router replicas must not share a node"

    (router,) = mesh_container("router")
    assert router.args.host in ("0.0.0.0", "::"), "other pods must reach it"
    env = {var["name"]: var for var in router.spec["env"]}
    raw_advertise = one_flag(
        router.spec.get("command", []) + router.spec.get("args", []), "--advertise-address", "router"
    )
    ip_var = _K8S_REF.match(raw_advertise)
    assert ip_var, f"--advertise-address {raw_advertise} must come from the pod IP"
    assert env[ip_var.group(1)]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert host_port(router.args.advertise_address)[1] == router.args.port

    # SIGTERM starts the drain; the kubelet waits preStop + the drain before SIGKILL.
    grace_s = pod_spec(router_deployment)["terminationGracePeriodSeconds"]
    needed_s = prestop_sleep_s(router.spec) + router.args.drain_grace_s + 1.0
    assert grace_s >= needed_s, (
        f"terminationGracePeriodSeconds {grace_s} < preStop + --drain-grace-s ({needed_s})"
    )
    assert prestop_sleep_s(router.spec) > 0, "keep serving while endpoint removal propagates"


def test_workers_run_on_gpu_nodes_one_profile_each() -> None:
    profiles = set()
    for workload in workloads():
        containers = [c for c in k8s_mesh_containers() if c.where.startswith(f"{name_of(workload)} ")]
        if not containers or containers[0].command != "worker":
            continue
        (worker,) = containers
        spec = pod_spec(workload)
        profiles.add(worker.args.machine_profile)
        assert worker.args.health_port is not None, f"{worker.where}: probes need --health-port"
        resources = worker.spec["resources"]
        assert str(resources["limits"].get("nvidia.com/gpu")) == "1", f"{worker.where}: one GPU per agent"
        assert worker.args.gpu_count == 1
        assert any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])), worker.where
        assert spec.get("nodeSelector") or spec.get("affinity", {}).get("nodeAffinity"), (
            f"{worker.where}: must land on {worker.args.machine_profile} nodes"
        )
        assert spec["terminationGracePeriodSeconds"] >= worker.args.drain_grace_s + 1.0
    assert profiles == {"l4", "a100"}


def test_http_api_containers_take_tokens_from_a_secret() -> None:
    """The facade, and a router serving it in-process (--http-port), read both tokens from a Secret."""
    for container in k8s_mesh_containers():
        if not container.http_ports():
            continue
        env = {var["name"]: var for var in container.spec.get("env", [])}
        for name in (AUTH_TOKEN_ENV, ADMIN_TOKEN_ENV):
            assert name in env, f"{container.where}: serves HTTP without {name}"
            reference = env[name].get("valueFrom", {}).get("secretKeyRef")
            assert reference, f"{container.where}: {name} must come from a Secret, not a literal"
            assert reference["key"] == name and not reference.get("optional", False)


def test_env_names_are_ones_the_code_reads() -> None:
    for workload in workloads():
        for container in pod_spec(workload)["containers"]:
            where = f"{name_of(workload)} container {container['name']}"
            is_mesh = image_repository(container["image"]) == MESH_IMAGE
            text = json.dumps(
                [container.get("command", []), container.get("args", []), container.get("env", [])]
            )
            referenced = set(_K8S_REF.findall(text))
            for var in container.get("env", []):
                name = var["name"]
                if is_mesh and name in CODE_ENV:
                    continue
                assert name in referenced, (
                    f"{where}: env {name} is neither read by the mesh nor used in a $({name}) expansion"
                )


# -- Kubernetes: hardening and labels ------------------------------------------------


def test_pods_are_hardened_and_sized() -> None:
    for workload in workloads():
        spec = pod_spec(workload)
        where = name_of(workload)
        security = spec.get("securityContext", {})
        assert security.get("runAsNonRoot") is True, where
        assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        for container in spec["containers"]:
            at = f"{where} container {container['name']}"
            context = container.get("securityContext", {})
            assert context.get("allowPrivilegeEscalation") is False, at
            assert context.get("readOnlyRootFilesystem") is True, at
            assert context.get("capabilities", {}).get("drop") == ["ALL"], at
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{at}: {kind} needs cpu and memory"
            assert ":" in container["image"] and not container["image"].endswith(":latest"), at


def test_resources_carry_app_kubernetes_io_labels() -> None:
    for file_name, doc in k8s_docs():
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "inference-mesh", f"{file_name}: {name_of(doc)}"
        if doc["kind"] != "Namespace":
            assert "app.kubernetes.io/name" in labels, f"{file_name}: {name_of(doc)}"
    for workload in workloads():
        template = pod_labels(workload)
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of"):
            assert key in template, f"{name_of(workload)} pods lack {key}"
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= template.items(), f"{name_of(workload)}: selector does not match its pods"
    # Two workloads must never select each other's pods.
    for workload in workloads():
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selected_workloads(selector) == [workload], f"{name_of(workload)}'s selector is ambiguous"


# -- compose -------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(compose_service_ids())), ids=compose_service_ids())
def test_compose_mesh_service_parses_with_the_cli(index: int) -> None:
    container = load_compose_mesh_container(*compose_mesh_entries()[index])
    published = compose_published_ports(container.spec)
    assert published <= container.bound_ports(), (
        f"{container.where}: publishes {published}, binds {container.bound_ports()}"
    )
    for name in container.env_names:
        assert name in CODE_ENV, f"{container.where}: env {name} is not read by the mesh"


def compose_by_command(command: str) -> dict[str, MeshContainer]:
    return {c.where.rsplit(" ", 1)[-1]: c for c in compose_mesh_containers() if c.command == command}


def test_compose_topology() -> None:
    services = compose_services()
    routers = compose_by_command("router")
    workers = compose_by_command("worker")
    facades = compose_by_command("facade")
    assert len(routers) == 2 and len(facades) == 1
    assert sorted(w.args.machine_profile for w in workers.values()) == ["a100", "l4"]
    assert {w.args.backend for w in workers.values()} == {"fake"}
    assert "etcd" in services
    for name, service in services.items():
        assert "healthcheck" in service, f"compose {name}: no healthcheck"
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"compose {name} depends on unknown {dependency}"
            assert condition.get("condition") == "service_healthy", f"compose {name} -> {dependency}"

    etcd_argv_ = compose_argv(services["etcd"])
    client_ports = url_ports(one_flag(etcd_argv_, "--listen-client-urls", "compose etcd"))
    peer_ports = url_ports(one_flag(etcd_argv_, "--listen-peer-urls", "compose etcd"))
    members = dict(
        e.split("=", 1) for e in one_flag(etcd_argv_, "--initial-cluster", "compose etcd").split(",")
    )
    assert list(members) == [one_flag(etcd_argv_, "--name", "compose etcd")]
    assert {urlsplit(url).port for url in members.values()} == peer_ports

    for name, router in routers.items():
        for endpoint in parse_etcd_url(router.args.etcd):
            host, port = host_port(endpoint)
            assert host == "etcd" and port in client_ports, f"compose {name}: --etcd {endpoint}"
        # Peers and workers dial what it advertises: its own service name and port.
        assert host_port(router.args.advertise_address) == (name, router.args.port)
    for name, client in {**workers, **facades}.items():
        for address in client.args.router:
            host, port = host_port(address)
            assert host in routers and port == routers[host].args.port, f"compose {name}: --router {address}"


def test_compose_healthchecks_probe_bound_ports_and_registered_health() -> None:
    grpc_script = compose()["x-grpc-health-check"]
    http_script = compose()["x-http-health-check"]
    assert "service=sys.argv[2]" in grpc_script and "sys.argv[1]" in http_script
    for container in compose_mesh_containers():
        test = container.spec["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], f"{container.where}: {test}"
        where = f"{container.where} healthcheck"
        if test[3] == grpc_script:
            address, service = test[4:]
            host, port = host_port(address)
            assert host == "127.0.0.1" and port in container.grpc_ports(), f"{where}: {address}"
            assert service == READINESS[container.command], (
                f"{where}: checks {service!r}, the {container.command}'s readiness service is "
                f"{READINESS[container.command]!r}"
            )
            assert service in HEALTH_SERVICES[container.command]
        else:
            assert test[3] == http_script, f"{where}: unknown script"
            (url,) = test[4:]
            parts = urlsplit(url)
            assert parts.port in container.http_ports(), f"{where}: {url}"
            assert parts.path == ROUTE_PATHS["readyz"] and parts.path in OPEN_GET_PATHS, f"{where}: {url}"
