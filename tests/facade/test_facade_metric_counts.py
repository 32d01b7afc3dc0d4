"""The per-request series are plain counts rendered at scrape time: check the exposition."""

from __future__ import annotations

import re

from http_facade.metrics import FacadeMetrics


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match.group(1))) == labels:
            return float(match.group(2))
    raise AssertionError(f"no sample {name} {labels}")


def test_latency_buckets_are_cumulative_and_a_bound_counts_in_its_own_bucket() -> None:
    metrics = FacadeMetrics()
    for latency_s in (0.001, 0.0011, 0.5, 500.0):
        metrics.observe_request("encode", 200, "", latency_s)
    text = metrics.render().decode()
    name = "sie_gateway_request_latency_seconds"
    assert sample(text, f"{name}_bucket", endpoint="encode", le="0.001") == 1
    assert sample(text, f"{name}_bucket", endpoint="encode", le="0.0025") == 2
    assert sample(text, f"{name}_bucket", endpoint="encode", le="0.5") == 3
    assert sample(text, f"{name}_bucket", endpoint="encode", le="120.0") == 3
    assert sample(text, f"{name}_bucket", endpoint="encode", le="+Inf") == 4
    assert sample(text, f"{name}_count", endpoint="encode") == 4
    assert abs(sample(text, f"{name}_sum", endpoint="encode") - 500.5021) < 1e-9


def test_request_counts_fold_profiles_past_the_label_limit_into_other() -> None:
    metrics = FacadeMetrics()
    for index in range(70):
        metrics.observe_request("encode", 200, f"gpu-{index}", 0.01)
    metrics.observe_request("encode", 200, "gpu-0", 0.01)
    text = metrics.render().decode()
    assert (
        sample(text, "sie_gateway_requests_total", endpoint="encode", status="200", machine_profile="gpu-0")
        == 2
    )
    assert (
        sample(text, "sie_gateway_requests_total", endpoint="encode", status="200", machine_profile="other")
        == 6
    )
