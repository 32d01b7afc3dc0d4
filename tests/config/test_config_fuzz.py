"""Whatever a client posts, a write ends in a reply or a MeshError: never another exception."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.catalog import load_catalog
from mesh.clock import SystemClock
from mesh.config_api import ConfigService, CoordinatedConfigStore
from mesh.errors import MeshError
from mesh.registry import WorkerRegistry
from tests.config.config_docs import ST_ADAPTER

pytestmark = pytest.mark.timeout(60)

KEYS = st.sampled_from(
    [
        "sie_id",
        "profiles",
        "default",
        "adapter_path",
        "max_batch_tokens",
        "adapter_options",
        "loadtime",
        "runtime",
        "extends",
        "revision",
        "hf_id",
        "compute_precision",
        "x",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.sampled_from(["acme/m", ST_ADAPTER, "default", "a b", "", "x.y:Z", "../x"]),
    st.text(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(KEYS | st.integers(0, 3), children, max_size=5)
    ),
    max_leaves=25,
)
DOCUMENTS = st.one_of(
    st.text(max_size=200),
    st.dictionaries(KEYS, VALUES, max_size=6).map(lambda doc: yaml.safe_dump(doc)),
    st.fixed_dictionaries(
        {"sie_id": st.sampled_from(["acme/m", "Acme/M", "bad id"]), "profiles": VALUES}
    ).map(lambda doc: yaml.safe_dump(doc)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents=st.lists(DOCUMENTS, min_size=1, max_size=3), as_json=st.booleans())
def test_any_document_is_answered_or_refused_with_a_mesh_error(documents, as_json):
    async def run() -> None:
        service = ConfigService(
            CoordinatedConfigStore.embedded(),
            registry=WorkerRegistry(SystemClock()),
            router_id="fuzz",
            catalog=load_catalog(),
        )
        await service.start()
        try:
            for document in documents:
                body, content_type = document, ""
                if as_json:
                    # Not every text is a YAML document; those are posted as they are.
                    with contextlib.suppress(Exception):
                        body, content_type = json.dumps(yaml.safe_load(document)), "application/json"
                with contextlib.suppress(MeshError):
                    await service.add_model_config(body, content_type=content_type)
        finally:
            await service.stop()

    asyncio.run(run())
