"""The OpenAPI 3.1 document of the REST API, generated from the route table."""

from __future__ import annotations

import re
from typing import Any

from http_facade.bodies import OUTPUT_DTYPES, OUTPUT_TYPES
from http_facade.config import SIE_API_VERSION
from http_facade.routes import ROUTES, Access, RouteSpec

_PATH_PARAMETER = re.compile(r"\{(\w+)(?::[^}]*)?\}")

_REF = "#/components/schemas/"


def openapi_path(aiohttp_path: str) -> str:
    """`/v1/encode/{model:.+}` -> `/v1/encode/{model}`."""
    return _PATH_PARAMETER.sub(r"{\1}", aiohttp_path)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_STRING = {"type": "string"}
_BOOL = {"type": "boolean"}
_NUMBER = {"type": "number"}
_INT = {"type": "integer"}

_MEDIA = {
    "type": "object",
    "description": "Media bytes: raw in msgpack, base64 in JSON.",
    "required": ["data"],
    "properties": {"data": {"type": "string", "contentEncoding": "base64"}, "format": _STRING},
}

_ITEM = {
    "type": "object",
    "description": "One input; needs at least one of text, images, audio, video, document.",
    "properties": {
        "id": _STRING,
        "text": _STRING,
        "images": {"type": "array", "items": _ref("Media")},
        "audio": _ref("Media"),
        "video": _ref("Media"),
        "document": _ref("Media"),
        "metadata": {"type": "object"},
    },
}

_OPTIONS = {
    "type": "object",
    "description": "Known options below; any other key passes through to the model backend.",
    "properties": {"lora": _STRING, "profile": _STRING},
    "additionalProperties": True,
}

_ENCODE_OPTIONS = {
    "type": "object",
    "description": "Known options below; any other key passes through to the model backend.",
    "properties": {"is_query": _BOOL, "normalize": _BOOL, "lora": _STRING, "profile": _STRING},
    "additionalProperties": True,
}

_ITEMS = {"type": "array", "minItems": 1, "items": _ref("Item")}


def _array_values(description: str) -> dict[str, Any]:
    return {
        "description": description + " JSON: (nested) number lists. msgpack: a msgpack-numpy map.",
        "anyOf": [{"type": "array"}, {"type": "object"}],
    }


_SCHEMAS: dict[str, Any] = {
    "Media": _MEDIA,
    "Item": _ITEM,
    "EncodeRequest": {
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": _ITEMS,
            "params": {
                "type": "object",
                "properties": {
                    "output_types": {"type": "array", "minItems": 1, "items": {"enum": list(OUTPUT_TYPES)}},
                    "instruction": _nullable(_STRING),
                    "output_dtype": _nullable({"enum": list(OUTPUT_DTYPES)}),
                    "options": _ENCODE_OPTIONS,
                },
            },
        },
    },
    "ScoreRequest": {
        "type": "object",
        "required": ["query", "items"],
        "properties": {
            "query": _ref("Item"),
            "items": {**_ITEMS, "maxItems": 1000},
            "instruction": _nullable(_STRING),
            "options": _OPTIONS,
        },
    },
    "ExtractRequest": {
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": _ITEMS,
            "params": {
                "type": "object",
                "properties": {
                    "labels": {"type": "array", "maxItems": 1000, "items": _STRING},
                    "output_schema": {"type": "object"},
                    "instruction": _nullable(_STRING),
                    "options": _OPTIONS,
                },
            },
        },
    },
    "Timing": {
        "type": "object",
        "properties": {"total_ms": _NUMBER, "queue_ms": _NUMBER, "inference_ms": _NUMBER},
    },
    "EncodeReply": {
        "type": "object",
        "required": ["model", "items"],
        "properties": {
            "model": _STRING,
            "items": {
                "type": "array",
                "description": "One result per input item, in input order.",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": _STRING,
                        "dense": {
                            "type": "object",
                            "properties": {
                                "dims": _INT,
                                "dtype": _STRING,
                                "values": _array_values("Shape [dims]."),
                            },
                        },
                        "sparse": {
                            "type": "object",
                            "properties": {
                                "dims": _nullable(_INT),
                                "dtype": _STRING,
                                "indices": _array_values("Shape [nnz]."),
                                "values": _array_values("Shape [nnz]."),
                            },
                        },
                        "multivector": {
                            "type": "object",
                            "properties": {
                                "token_dims": _INT,
                                "num_tokens": _INT,
                                "dtype": _STRING,
                                "values": _array_values("Shape [num_tokens, token_dims]."),
                            },
                        },
                    },
                },
            },
            "timing": _ref("Timing"),
        },
    },
    "ScoreReply": {
        "type": "object",
        "required": ["model", "scores"],
        "properties": {
            "model": _STRING,
            "query_id": _nullable(_STRING),
            "scores": {
                "type": "array",
                "description": "Best first; rank 0 is the best. item_id defaults to item-{index}.",
                "items": {
                    "type": "object",
                    "properties": {"item_id": _STRING, "score": _NUMBER, "rank": _INT},
                },
            },
            "timing": _ref("Timing"),
        },
    },
    "ExtractReply": {
        "type": "object",
        "required": ["model", "items"],
        "properties": {
            "model": _STRING,
            "items": {
                "type": "array",
                "description": "One result per input item, in input order.",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": _STRING,
                        "entities": {"type": "array", "items": {"type": "object"}},
                        "relations": {"type": "array", "items": {"type": "object"}},
                        "classifications": {"type": "array", "items": {"type": "object"}},
                        "objects": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
            "timing": _ref("Timing"),
        },
    },
    "ModelInfo": {
        "type": "object",
        "properties": {
            "name": _STRING,
            "loaded": _BOOL,
            "state": {"enum": ["available", "loading", "loaded", "unloading", "failed"]},
            "workers": {"type": "array", "items": _STRING},
            "worker_count": _INT,
            "gpu_types": {"type": "array", "items": _STRING},
            "total_queue_depth": _INT,
            "bundles": {"type": "array", "items": _STRING},
            "profiles": {"type": "object"},
        },
    },
    "ModelList": {"type": "object", "properties": {"models": {"type": "array", "items": _ref("ModelInfo")}}},
    "Health": {
        "type": "object",
        "required": ["status", "type"],
        "properties": {
            "status": {"enum": ["healthy", "degraded", "no_workers"]},
            "type": {"const": "gateway"},
            "worker_count": _INT,
            "gpu_count": _INT,
            "models_loaded": {"type": "array", "items": _STRING},
            "configured_gpu_types": {"type": "array", "items": _STRING},
            "live_gpu_types": {"type": "array", "items": _STRING},
            "cluster": {"type": "object"},
            "workers": {"type": "array", "items": {"type": "object"}},
            "models": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Status": {"type": "object", "properties": {"status": _STRING}},
    "Provisioning": {
        "type": "object",
        "description": "202 for clients without X-SIE-SDK-Version or with sie-sdk <= 0.6.4.",
        "properties": {
            "status": {"const": "provisioning"},
            "gpu": _nullable(_STRING),
            "bundle": _STRING,
            "estimated_wait_s": _NUMBER,
            "message": _STRING,
        },
    },
    "Error": {
        "type": "object",
        "required": ["detail"],
        "properties": {
            "detail": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": _STRING,
                    "message": _STRING,
                    "param": _STRING,
                    "compatible_bundles": {"type": "array", "items": _STRING},
                },
            }
        },
    },
}

_ROUTING_HEADERS = [
    {
        "name": "X-SIE-MACHINE-PROFILE",
        "in": "header",
        "description": "Machine profile (GPU type); 'pool/profile' also names the pool.",
        "schema": _STRING,
    },
    {"name": "X-SIE-Pool", "in": "header", "description": "Tenant pool.", "schema": _STRING},
    {
        "name": "X-SIE-SDK-Version",
        "in": "header",
        "description": "Client SDK version; decides the provisioning answer (202 or 503).",
        "schema": _STRING,
    },
]
_REQUEST_ID_HEADER = {
    "name": "X-SIE-Request-Id",
    "in": "header",
    "description": "Echoed when valid, generated otherwise.",
    "schema": _STRING,
}

_ERROR_STATUSES = {
    "400": "Invalid input (the message names the field).",
    "401": "Missing bearer token.",
    "403": "Wrong bearer token.",
    "404": "Unknown model or route.",
    "405": "Method not allowed.",
    "409": "Explicit bundle cannot serve the model.",
    "413": "Body over the size limit.",
    "415": "Body neither JSON nor msgpack.",
    "429": "Rate limited.",
    "502": "Worker failed or the model failed to load.",
    "503": "No capacity yet (PROVISIONING), model or LoRA loading, queue full, pool unavailable.",
    "504": "The request's budget ran out.",
}


def _error_reply(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _operation(route: RouteSpec) -> dict[str, Any]:
    content_types = ["application/json", "application/msgpack"] if route.msgpack else ["application/json"]
    parameters: list[dict[str, Any]] = [_REQUEST_ID_HEADER]
    if "{model" in route.path:
        parameters.insert(
            0,
            {
                "name": "model",
                "in": "path",
                "required": True,
                "description": "[bundle:/]org/model[:profile]; may contain slashes.",
                "schema": _STRING,
            },
        )
    if route.access is Access.INFERENCE:
        parameters.extend(_ROUTING_HEADERS)
    ok: dict[str, Any] = {"description": "OK"}
    if route.reply_schema:
        ok["content"] = {ctype: {"schema": _ref(route.reply_schema)} for ctype in content_types}
    elif route.name == "metrics":
        ok["content"] = {"text/plain": {"schema": _STRING}}
    elif route.name == "openapi":
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    responses: dict[str, Any] = {"200": ok}
    if route.websocket:
        responses = {"101": {"description": "Switching Protocols; then one JSON text frame per second."}}
    if route.access is Access.INFERENCE:
        responses["202"] = {
            "description": "Provisioning (clients that predate 503 PROVISIONING).",
            "content": {"application/json": {"schema": _ref("Provisioning")}},
        }
    for status, description in _ERROR_STATUSES.items():
        responses[status] = _error_reply(description)
    operation: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "parameters": parameters,
        "responses": responses,
    }
    if route.request_schema:
        operation["requestBody"] = {
            "required": True,
            "content": {ctype: {"schema": _ref(route.request_schema)} for ctype in content_types},
        }
    if route.access is not Access.OPEN:
        operation["security"] = [{"bearer": []}, {}]
    return operation


def build_openapi(routes: tuple[RouteSpec, ...] = ROUTES) -> dict[str, Any]:
    """The OpenAPI document of `routes` (an app's route table; the core routes by default)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(openapi_path(route.path), {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "inference-mesh HTTP facade (SIE API)",
            "version": SIE_API_VERSION,
            "description": "The documented SIE REST API served by inference-mesh. "
            "With SIE_AUTH_TOKEN or SIE_ADMIN_TOKEN set, non-probe routes need 'Authorization: Bearer'.",
        },
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
