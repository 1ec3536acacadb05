"""Configurations (images and builtin states) and PXE Pilot's deploy call."""

from ks.api import SOURCE, answer, body, bp, needs
from ks.api.hosts import entry_ref
from ks.api.power import reboot_hosts
from ks.boot import images
from ks.core import selectors
from ks.core.errors import BadRequest, NotFound
from ks.core.roles import Action
from ks.fleet import deploys, operations
from ks.web import runtime

DEPLOY_FIELDS = {"hosts", "selector", "reboot"}


def configuration_names() -> list[dict]:
    """The site's configurations."""
    return deploys.configurations(runtime().settings.root)


@bp.get("/configurations")
@needs(Action.READ)
def list_configurations():
    """Images and builtin states, PXE Pilot's ``{"configurations": [{"name": ...}]}``."""
    return answer({"configurations": configuration_names()})


@bp.get("/configurations/<name>")
@needs(Action.READ)
def get_configuration(name: str):
    """One configuration, with the files of an image."""
    for config in configuration_names():
        if config["name"] == name:
            image = images.load(runtime().settings.root, name) if config["kind"] == "image" else None
            files = image.files if image else []
            return answer({**config, "files": files})
    raise NotFound(f"configuration {name[:64]!r} not found")


def parse_deploy(document: dict) -> tuple[list, selectors.Selector | None, bool]:
    """PXE Pilot's deploy body ``{"hosts": [...], "reboot": bool}``, or ``{"selector": "rack=4", ...}``."""
    unknown = sorted(set(document) - DEPLOY_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; deploy takes hosts or selector, and reboot")
    reboot = document.get("reboot", False)
    if not isinstance(reboot, bool):
        raise BadRequest("reboot must be true or false")
    if "selector" in document:
        if "hosts" in document:
            raise BadRequest("give either hosts or selector")
        return [], selectors.parse(document["selector"]), reboot
    entries = document.get("hosts")
    if not isinstance(entries, list) or not entries:
        raise BadRequest('hosts must be a non-empty list like [{"name": "h1"}, {"macAddress": "00:00:00:00:00:01"}] '
                         '(or give a selector like "rack=4")')
    return entries, None, reboot


@bp.put("/configurations/<name>/deploy")
@needs(Action.OPERATE)
def deploy(name: str):
    """Give every listed (or selected) host this configuration; all or nothing. 204 like PXE Pilot."""
    entries, selector, reboot = parse_deploy(body())
    refs = [entry_ref(entry) for entry in entries]
    host_ids = operations.deploy(runtime().db, runtime().settings.root, name, refs, SOURCE, selector=selector)
    if reboot:
        failures = reboot_hosts(host_ids)
        if failures:
            message = f"configuration {name} deployed, but the reboot failed for: " + "; ".join(
                f"host {hid}: {why}" for hid, why in failures)
            return answer({"error": message, "status": 409,
                           "reboot_failures": [{"host": hid, "error": why} for hid, why in failures]}, 409)
    return "", 204
