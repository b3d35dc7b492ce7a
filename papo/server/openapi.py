"""The OpenAPI 3.1 document, generated from the declarative endpoints.

Schemas come from the same msgspec Structs that validate requests and encode
responses; errors an endpoint may answer are listed from its declaration.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import msgspec

from papo import __version__
from papo.protocol.errors import HTTP_STATUS, ErrorBody, ErrorCode
from papo.server.rest import Endpoint

REF = "#/components/schemas/{name}"


def _error_responses(endpoint: Endpoint) -> dict[str, Any]:
    by_status: dict[int, list[ErrorCode]] = defaultdict(list)
    for code in endpoint.all_errors():
        by_status[HTTP_STATUS[code]].append(code)
    responses: dict[str, Any] = {}
    for status, codes in sorted(by_status.items()):
        response: dict[str, Any] = {
            "description": "Error codes: " + ", ".join(f"`{code.value}`" for code in codes),
            "content": {"application/json": {"schema": {"$ref": REF.format(name="ErrorBody")}}},
        }
        if status == 429:
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds until the limit resets",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                }
            }
        responses[str(status)] = response
    return responses


def _query_parameters(query: type, components: dict[str, Any]) -> list[dict[str, Any]]:
    (schema,), found = msgspec.json.schema_components([query], ref_template=REF)
    components.update(found)
    name = schema["$ref"].rsplit("/", 1)[1]
    struct_schema = components.pop(name)
    required = set(struct_schema.get("required", []))
    return [
        {"name": field, "in": "query", "required": field in required, "schema": prop}
        for field, prop in struct_schema["properties"].items()
    ]


def _operation(endpoint: Endpoint, components: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": endpoint.handler.__name__,
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "responses": {},
    }
    if endpoint.description:
        operation["description"] = endpoint.description
    if endpoint.auth == "public":
        operation["security"] = []
    else:
        operation["security"] = [{"bearer": []}]
        if endpoint.auth != "user":
            operation["description"] = (
                operation.get("description", "") + f" Needs permission `{endpoint.auth}`."
            ).strip()
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": schema,
        }
        for name, schema in endpoint.path_params.items()
    ]
    if endpoint.query is not None:
        parameters += _query_parameters(endpoint.query, components)
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(endpoint.body)}},
        }
    if endpoint.status == 204:
        success: dict[str, Any] = {"description": "Done"}
    else:
        success = {"description": "Success"}
        if endpoint.response is not None:
            success["content"] = {"application/json": {"schema": _ref(endpoint.response)}}
    operation["responses"][str(endpoint.status)] = success
    operation["responses"].update(_error_responses(endpoint))
    return operation


def _ref(struct: type) -> dict[str, str]:
    return {"$ref": REF.format(name=struct.__name__)}


def build_openapi(endpoints: Iterable[Endpoint]) -> dict[str, Any]:
    endpoints = list(endpoints)
    components: dict[str, Any] = {}
    types: list[type] = [ErrorBody]
    for endpoint in endpoints:
        types += [t for t in (endpoint.body, endpoint.response) if t is not None]
    _, schemas = msgspec.json.schema_components(list(dict.fromkeys(types)), ref_template=REF)
    components.update(schemas)
    paths: dict[str, dict[str, Any]] = defaultdict(dict)
    for endpoint in endpoints:
        paths[endpoint.path][endpoint.method.lower()] = _operation(endpoint, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "papo REST API",
            "version": __version__,
            "description": "REST side-endpoints of papo. Errors always have the shape "
            '`{"error": {"code", "message", "field"?}}`.',
        },
        "paths": dict(paths),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A papo access token, a bot token, or a JWT from a "
                    "trusted issuer.",
                }
            },
        },
    }
