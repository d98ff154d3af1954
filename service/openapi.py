"""The OpenAPI document of the service's routes, written out rather than inferred."""

from __future__ import annotations

from typing import Any

from service.verify.legacy import MAX_UUID_LENGTH


def _answer(description: str, example: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"example": example}}}


_REJECTED = {
    "type": "object",
    "required": ["status", "reason", "detail"],
    "properties": {
        "status": {"const": "rejected"},
        "reason": {"type": "string", "description": "Stable token, also a metric label."},
        "detail": {"type": "string"},
    },
}


_UNAVAILABLE = {
    "type": "object",
    "required": ["status", "reason"],
    "properties": {"status": {"const": "unavailable"}, "reason": {"type": "string"}},
}


def _webhook_answers() -> dict[str, Any]:
    rejected = {"content": {"application/json": {"schema": _REJECTED}}}
    return {
        "202": _answer(
            "Stored: the events and their jobs are in Redis.", {"status": "accepted", "event_ids": ["e0a7"]}
        ),
        "200": _answer("Already accepted (a retry), or an empty batch.", {"status": "duplicate"}),
        "400": {"description": "Malformed body, token or claims.", **rejected},
        "401": {"description": "Signature, key, issuer, audience, age or hash check failed.", **rejected},
        "404": {"description": "This source is not configured.", **rejected},
        "413": {"description": "Body over the size limit.", **rejected},
        "415": {"description": "Unsupported Content-Type.", **rejected},
        "503": {
            "description": "Redis or the signing keys are unavailable, or the backlog is full; retry later.",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            "content": {"application/json": {"schema": _UNAVAILABLE}},
        },
        "500": _answer("A fault of the service: nothing was stored; the sender retries.", {"status": "error"}),
    }


def openapi_document(max_body_size: int) -> dict[str, Any]:
    """Build the document; ``max_body_size`` is stated on the request bodies."""
    token = {
        "type": "string",
        "minLength": 1,
        "maxLength": max_body_size,
        "pattern": r"^\s*[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\s*$",
        "description": "A compact JWS (Security Event Token).",
    }
    legacy_item = {
        "type": "object",
        "required": ["uuid"],
        "properties": {
            "uuid": {"type": "string", "minLength": 1, "maxLength": MAX_UUID_LENGTH},
            "hash": {"type": "string"},
            "datetime": {"type": "string"},
        },
    }
    legacy_batch = {"schema": {"type": "array", "items": legacy_item}}
    plain = {"200": {"description": "OK", "content": {"application/json": {}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "capture-relay", "version": "1"},
        "paths": {
            "/webhooks/capture/v3": {
                "post": {
                    "summary": "Akamai Identity Cloud Webhooks v3 delivery",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/secevent+jwt": {"schema": token},
                            "application/jwt": {"schema": token},
                            "text/plain": {"schema": token},
                        },
                    },
                    "responses": _webhook_answers(),
                }
            },
            "/webhooks/capture/legacy": {
                "post": {
                    "summary": "Legacy Capture webhook delivery (JSON array)",
                    "security": [{}, {"basic": []}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": legacy_batch, "text/plain": legacy_batch},
                    },
                    "responses": _webhook_answers(),
                }
            },
            "/healthz": {"get": {"summary": "Liveness", "responses": plain}},
            "/readyz": {
                "get": {
                    "summary": "Readiness: Redis reachable, signing keys loaded or loadable",
                    "responses": {**plain, "503": {"description": "Not ready", "content": {"application/json": {}}}},
                }
            },
            "/openapi.json": {"get": {"summary": "This document", "responses": plain}},
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "OK", "content": {"text/plain": {}}}},
                }
            },
        },
        "components": {"securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}},
    }
