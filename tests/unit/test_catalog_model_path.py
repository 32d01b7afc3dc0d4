"""The model path grammar `[bundle:/]org/model[:profile]`."""

from __future__ import annotations

import pytest

from mesh.catalog import ModelPath, parse_model_path
from mesh.errors import ErrorCode, MeshError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("org/model", ModelPath("org/model")),
        ("BAAI/bge-m3", ModelPath("BAAI/bge-m3")),
        ("org/model:sparse", ModelPath("org/model", profile="sparse")),
        ("default:/org/model", ModelPath("org/model", bundle="default")),
        (
            "gliner:/urchade/gliner_multi-v2.1:high-recall",
            ModelPath("urchade/gliner_multi-v2.1", "gliner", "high-recall"),
        ),
        ("org/sub/model", ModelPath("org/sub/model")),
        ("bert-base-uncased", ModelPath("bert-base-uncased")),
        ("org/model.v1_2-x", ModelPath("org/model.v1_2-x")),
    ],
)
def test_valid_paths(text: str, expected: ModelPath) -> None:
    parsed = parse_model_path(text)
    assert parsed == expected
    assert str(parsed) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "org/model ",
        "/model",
        "org/",
        "org//model",
        ":/org/model",  # empty bundle
        "org/model:",  # empty profile
        "org/model:a:b",  # second colon
        "bundle:org/model",  # a colon is not a bundle prefix without the slash
        "org/model:pro/file",
        "b/x:/org/model",  # a bundle name has no slash
        "org/../model",
        "./model",
        "org/mo del",
        "org/model?x=1",
        "a:/b:/org/model",
    ],
)
def test_malformed_paths_are_invalid_input_on_model(text: str) -> None:
    with pytest.raises(MeshError) as caught:
        parse_model_path(text)
    assert caught.value.code is ErrorCode.INVALID_INPUT
    assert caught.value.field == "model"
