"""The OpenAPI 3 description of /api/v1, served at /api/v1/openapi.json."""

import copy
import functools
import re

from flask import current_app

from ks import __version__
from ks.api import PUBLIC, action_of, answer, bp
from ks.boot import nocloud
from ks.core.roles import needed
from ks.core.selectors import MAX_SELECTOR_LENGTH
from ks.fleet.deploys import MAX_DEPLOY_HOSTS, MAX_SELECTED_HOSTS
from ks.records import record


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    words = {400: "Malformed request", 401: "No valid token", 403: "The token's role may not do this",
             404: "Not found",
             409: "Conflict with the current state",
             429: "Too many failed logins from this address: try again after Retry-After seconds",
             502: "The BMC refused or failed the operation", 504: "The BMC did not answer in time"}
    if 401 in codes:  # where a token is checked, a guessing address is held back
        codes = (*codes, 429)
    return {str(c): _json(_ref("Error"), words[c]) for c in codes}


REF = {"name": "ref", "in": "path", "required": True, "description": "Host id, one of its MACs, or its unique hostname",
       "schema": {"type": "string", "minLength": 1}}
CONFIG = {"name": "name", "in": "path", "required": True, "description": "Image or builtin state",
          "schema": {"type": "string", "minLength": 1}}
NOCLOUD_FILE = {"name": "file", "in": "path", "required": True, "description": "A file of the cloud-init NoCloud seed",
                "schema": {"type": "string", "enum": list(nocloud.FILES)}}
NULLABLE_STRING = {"type": "string", "nullable": True}
SELECTOR_GRAMMAR = (
    "A selector: comma-separated terms `key=value` or `key!=value`, all of which must hold, e.g. "
    "`rack=4,role!=db`, `state=new`, `mac=52:54:00:*`, `product=PowerEdge R640`. Values are globs (`*` any run, "
    "`?` one character); `\\` takes the next character literally (`\\,` a comma in a value). Keys: the fields "
    "`id`, `hostname`, `state` (current state), `chain`, `mac` (any of the host's MACs, `:` or `-`), `serial`, "
    "`uuid`; otherwise the host's label of that name, else its fact; `label.NAME` and `fact.NAME` name one "
    "explicitly. A missing label or fact is the empty value. A malformed selector is a 400 naming the position "
    "of the mistake."
)
SELECTOR = {"name": "selector", "in": "query", "description": SELECTOR_GRAMMAR,
            "schema": {"type": "string", "maxLength": MAX_SELECTOR_LENGTH}}

SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error", "status"],
        "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
    },
    "Host": {
        "type": "object",
        "required": ["id", "hostname", "state", "chain", "macs", "serial", "uuid", "metadata", "bmc"],
        "properties": {
            **record.schema_properties(),
            "power": {"type": "string", "enum": ["on", "off", "unknown"], "nullable": True},
        },
    },
    "DeployRebootFailed": {
        "type": "object",
        "required": ["error", "status", "reboot_failures"],
        "properties": {
            "error": {"type": "string"},
            "status": {"type": "integer"},
            "reboot_failures": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["host", "error"],
                    "properties": {"host": {"type": "integer"}, "error": {"type": "string"}},
                },
            },
        },
    },
    "HostList": {
        "type": "object",
        "required": ["hosts", "total", "limit", "offset"],
        "properties": {
            "hosts": {"type": "array", "items": _ref("Host")},
            "total": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
        },
    },
    "HostPatch": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "hostname": {"type": "string"},
            "metadata": {"type": "object"},
            "state": {
                "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                "description": "The new chain, e.g. 'wipe,image1'; replaces the whole chain",
            },
            "force": {"type": "boolean", "description": "Set image states without an image directory"},
            "labels": {"type": "object", "additionalProperties": {"type": "string", "nullable": True},
                       "description": "Labels to set (`\"rack\": \"4\"`) or, with null, remove; others stay"},
            "bmc": {
                "type": "object",
                "nullable": True,
                "required": ["address"],
                "additionalProperties": False,
                "properties": {
                    "address": {"type": "string"},
                    "username": {"type": "string"},
                    "password": {"type": "string"},
                },
            },
        },
    },
    "HostChangeResult": {
        "type": "object",
        "required": ["hosts", "total", "dry_run"],
        "properties": {
            "hosts": {"type": "array", "items": _ref("Host"),
                      "description": "The selected hosts after the change (with dry_run: as they are)"},
            "total": {"type": "integer", "minimum": 0},
            "dry_run": {"type": "boolean"},
        },
    },
    "Event": {
        "type": "object",
        "required": ["id", "host_id", "at", "kind", "from", "to", "source", "detail"],
        "properties": {
            "id": {"type": "integer"},
            "host_id": {"type": "integer"},
            "at": {"type": "string", "format": "date-time"},
            "kind": {"type": "string"},
            "from": NULLABLE_STRING,
            "to": NULLABLE_STRING,
            "source": {"type": "string"},
            "detail": {"type": "string"},
        },
    },
    "History": {
        "type": "object",
        "required": ["host", "events"],
        "properties": {"host": {"type": "integer"}, "events": {"type": "array", "items": _ref("Event")}},
    },
    "Configuration": {
        "type": "object",
        "required": ["name", "kind"],
        "properties": {
            "name": {"type": "string"},
            "kind": {"type": "string", "enum": ["image", "builtin"]},
            "files": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Configurations": {
        "type": "object",
        "required": ["configurations"],
        "properties": {"configurations": {"type": "array", "items": _ref("Configuration")}},
    },
    "Deploy": {
        "type": "object",
        "oneOf": [{"required": ["hosts"]}, {"required": ["selector"]}],
        "additionalProperties": False,
        "properties": {
            "selector": {"type": "string", "maxLength": MAX_SELECTOR_LENGTH,
                         "description": f"Instead of hosts: every host this selector matches (at most "
                                        f"{MAX_SELECTED_HOSTS}). " + SELECTOR_GRAMMAR},
            "hosts": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_DEPLOY_HOSTS,
                "items": {
                    "type": "object",
                    "minProperties": 1,
                    "maxProperties": 1,
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "macAddress": {"type": "string"},
                        "mac_address": {"type": "string"},
                    },
                },
            },
            "reboot": {"type": "boolean", "description": "Power-cycle the hosts after the change"},
        },
    },
    "PowerAction": {
        "type": "object",
        "required": ["action"],
        "additionalProperties": False,
        "properties": {"action": {"type": "string", "enum": ["status", "on", "off", "cycle"]}},
    },
    "Discovery": {
        "type": "object",
        "required": ["subnets", "bmcs"],
        "properties": {
            "subnets": {"type": "array", "items": {"type": "string"}, "description": "KS_BMC_SUBNETS"},
            "bmcs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["host", "hostname", "mac", "ip"],
                    "properties": {
                        "host": {"type": "integer"},
                        "hostname": {"type": "string"},
                        "mac": {"type": "string"},
                        "ip": {**NULLABLE_STRING, "description": "null: not found"},
                    },
                },
            },
        },
    },
    "PowerResult": {
        "type": "object",
        "required": ["host", "action", "power"],
        "properties": {
            "host": {"type": "integer"},
            "action": {"type": "string"},
            "power": {"type": "string", "enum": ["on", "off", "unknown"]},
        },
    },
}

PATHS = {
    "/hosts": {
        "get": {
            "summary": "List hosts",
            "parameters": [
                {"name": "state", "in": "query", "schema": {"type": "string"}, "description": "Current state"},
                {"name": "mac", "in": "query", "schema": {"type": "string"}},
                {"name": "serial", "in": "query", "schema": {"type": "string"}},
                SELECTOR,
                {"name": "power", "in": "query", "schema": {"type": "string", "enum": ["0", "1"]},
                 "description": "1: query every BMC (in parallel, short timeout)"},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
                {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
            ],
            "responses": {"200": _json(_ref("HostList"), "Hosts"), **_errors(400, 401, 404)},
        },
        "patch": {
            "summary": "Change every host a selector matches (state, metadata, labels), all or nothing",
            "description": f"The body is a host's PATCH without hostname and bmc, which belong to one host. "
                           f"At most {MAX_SELECTED_HOSTS} hosts in one change: it is one transaction, which "
                           "holds the database's writer lock (and so every boot) until it commits.",
            "parameters": [
                {**SELECTOR, "required": True},
                {"name": "dry_run", "in": "query", "schema": {"type": "string", "enum": ["0", "1", "true", "false"]},
                 "description": "1: answer which hosts the change would touch; change nothing"},
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("HostPatch")}}},
            "responses": {"200": _json(_ref("HostChangeResult"), "The selected hosts"), **_errors(400, 401, 409)},
        },
    },
    "/hosts/{ref}": {
        "parameters": [REF],
        "get": {
            "summary": "Get a host",
            "responses": {"200": _json(_ref("Host"), "The host"), **_errors(401, 404, 409)},
        },
        "patch": {
            "summary": "Change hostname, metadata, state chain or BMC (all or nothing)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("HostPatch")}}},
            "responses": {"200": _json(_ref("Host"), "The changed host"), **_errors(400, 401, 404, 409)},
        },
        "delete": {
            "summary": "Delete a host",
            "responses": {"204": {"description": "Deleted"}, **_errors(401, 404, 409)},
        },
    },
    "/hosts/{ref}/history": {
        "parameters": [REF],
        "get": {
            "summary": "A host's history",
            "responses": {"200": _json(_ref("History"), "Events"), **_errors(401, 404, 409)},
        },
    },
    "/hosts/{ref}/nocloud/{file}": {
        "parameters": [REF, NOCLOUD_FILE],
        "get": {
            "summary": "A file of the host's cloud-init NoCloud seed, as its current boot reads it",
            "responses": {
                "200": {"description": "The file (YAML; empty for an absent vendor-data or network-config)",
                        "content": {"text/plain": {"schema": {"type": "string"}}}},
                **_errors(401, 404, 409),
            },
        },
    },
    "/hosts/{ref}/ignition": {
        "parameters": [REF],
        "get": {
            "summary": "The host's Ignition config, as its current boot reads it",
            "responses": {"200": _json({"type": "object"}, "The config"), **_errors(401, 404, 409)},
        },
    },
    "/hosts/{ref}/power": {
        "parameters": [REF],
        "post": {
            "summary": "Power status, on, off or cycle through the host's BMC",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("PowerAction")}}},
            "responses": {"200": _json(_ref("PowerResult"), "Done"), **_errors(400, 401, 404, 409, 502, 504)},
        },
    },
    "/hosts/{ref}/reboot": {
        "parameters": [REF],
        "patch": {
            "summary": "Power-cycle a host (PXE Pilot)",
            "responses": {"204": {"description": "Rebooted"}, **_errors(401, 404, 409)},
        },
    },
    "/discovery": {
        "get": {
            "summary": "Where each BMC given by MAC is now (the server's neighbour table; no sweep)",
            "responses": {"200": _json(_ref("Discovery"), "BMCs given by MAC"), **_errors(400, 401)},
        },
        "patch": {
            "summary": "Sweep KS_BMC_SUBNETS so that BMCs given by MAC are found (PXE Pilot)",
            "responses": {"204": {"description": "Swept"}, **_errors(400, 401, 409)},
        },
    },
    "/events": {
        "get": {
            "summary": "The history as Server-Sent Events, from now on or after an event id",
            "parameters": [
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer", "minimum": 0},
                 "description": "Resume after this event (what a reconnecting EventSource sends)"},
                {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0},
                 "description": "Start after this event id; without either, the stream starts with the next event"},
            ],
            "responses": {
                "200": {"description": "`text/event-stream`: each event's `id:` (its id), `event:` (its kind) and "
                                       "`data:` (the Event document); a comment line after 15 s of silence; "
                                       "`event: ended`, then the end, within 30 s of the token's revocation",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                **_errors(400, 401, 403),
                "503": _json(_ref("Error"), "This server process serves as many streams as KS_EVENT_STREAMS allows "
                                            "(the API's and the dashboard's together)"),
            },
        },
    },
    "/configurations": {
        "get": {
            "summary": "Images and builtin states",
            "responses": {"200": _json(_ref("Configurations"), "Configurations"), **_errors(401)},
        },
    },
    "/configurations/{name}": {
        "parameters": [CONFIG],
        "get": {
            "summary": "One configuration",
            "responses": {"200": _json(_ref("Configuration"), "The configuration"), **_errors(401, 404)},
        },
    },
    "/configurations/{name}/deploy": {
        "parameters": [CONFIG],
        "put": {
            "summary": "Give hosts this configuration (PXE Pilot's deploy); nothing changes if one is unknown",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Deploy")}}},
            "responses": {
                "204": {"description": "Deployed"},
                **_errors(400, 401, 404),
                "409": _json(_ref("DeployRebootFailed"), "Deployed, but some hosts could not be power-cycled"),
            },
        },
    },
}

DOCUMENT = {
    "openapi": "3.0.3",
    "info": {"title": "KIWIspray admin API", "version": __version__,
             "description": "Hosts, their state chains and power. Every route needs `Authorization: Bearer <token>` "
                            "(`kiwispray token create NAME --role ROLE`) of a role that may use it: each operation's "
                            "`x-kiwispray-role` (viewer < operator < admin; each may do what the ones below may). "
                            "A PATCH of a host that sets `bmc` needs admin."},
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}],
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": SCHEMAS},
    "paths": {
        **PATHS,
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3", "content": {"application/json": {}}}},
            }
        },
    },
}


def with_roles(document: dict, rules) -> dict:
    """``document`` with each operation's least role (``x-kiwispray-role``), as its route declares it."""
    document = copy.deepcopy(document)
    prefix = bp.url_prefix or ""
    for rule in rules:
        if rule.endpoint in PUBLIC or not rule.rule.startswith(prefix + "/"):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule[len(prefix):])
        role = needed(action_of(rule.endpoint)).label
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = document["paths"].get(path, {}).get(method.lower())
            if operation is not None:
                operation["x-kiwispray-role"] = role
                operation["description"] = f"Role: {role} or higher."
    return document


@functools.cache
def _document(app_key: int) -> dict:
    return with_roles(DOCUMENT, current_app.url_map.iter_rules())


@bp.get("/openapi.json")
def openapi():
    """This API's OpenAPI 3 document (no token needed)."""
    return answer(_document(id(current_app.url_map)))  # one document per application
