"""The entity type schema the simulator serves at ``/entityType``: a plausible Capture ``user``.

The same schema decides which attribute paths exist: a path outside it is Capture's error 223
``unknown_attribute`` in ``attributes``, ``attribute_name``, ``key_attribute``, ``sort_on`` and
filters, and a 400 when the control API is asked to store it.
"""

from __future__ import annotations

from typing import Any

AttrDef = dict[str, Any]


def _attr(name: str, kind: str, *, length: int | None = None, case_sensitive: bool = True, **more: Any) -> AttrDef:
    return {
        "name": name,
        "type": kind,
        "length": length,
        "case-sensitive": case_sensitive,
        "constraints": more.pop("constraints", []),
        "features": more.pop("features", []),
        **more,
    }


def _string(name: str, length: int = 1000, **more: Any) -> AttrDef:
    return _attr(name, "string", length=length, **more)


_ADDRESS = [
    _string("address1"),
    _string("address2"),
    _string("city"),
    _string("company"),
    _string("country"),
    _string("mobile", 100),
    _string("phone", 100),
    _string("stateAbbreviation", 100),
    _string("zip", 100),
    _string("zipPlus4", 100),
]

_PROFILE = [
    _string("domain"),
    _string("identifier", constraints=["required"]),
    _string("displayName"),
    _string("preferredUsername"),
    _attr("accessCredentials", "json"),
]

USER_ATTR_DEFS: list[AttrDef] = [
    _attr("id", "id", features=["query"], description="simple identifier for this entity"),
    _attr("uuid", "uuid", constraints=["unique"], features=["query"], description="globally unique identifier"),
    _attr("created", "dateTime", features=["query"], description="when this entity was created"),
    _attr("lastUpdated", "dateTime", features=["query"], description="when this entity was last updated"),
    _string(
        "email",
        256,
        case_sensitive=False,
        constraints=["unique", "email-address", "unicode-printable"],
        features=["query"],
    ),
    _attr("emailVerified", "dateTime", features=["query"]),
    _string("givenName", features=["query"]),
    _string("middleName"),
    _string("familyName", features=["query"]),
    _string("displayName", 255),
    _attr("birthday", "date"),
    _string("gender", 100),
    _string("aboutMe", 4096),
    _string("currentLocation"),
    _attr("display", "json"),
    _attr("deactivateAccount", "dateTime"),
    _attr("lastLogin", "dateTime", features=["query"]),
    _attr("password", "password-bcrypt"),
    _attr("optIn", "boolean"),
    _attr("primaryAddress", "object", attr_defs=_ADDRESS),
    _attr("profiles", "plural", attr_defs=_PROFILE),
    _attr("photos", "plural", attr_defs=[_string("type", 100), _string("value")]),
    _attr("statuses", "plural", attr_defs=[_string("status", 256), _attr("statusCreated", "dateTime")]),
]

# Set by Capture, never by a client or the control API.
RESERVED = frozenset({"id", "uuid", "created", "lastUpdated"})


def schema_for(entity_type: str) -> dict[str, Any]:
    """The ``schema`` object of ``/entityType`` (every entity type shares the user attributes)."""
    return {"name": entity_type, "attr_defs": USER_ATTR_DEFS}


def attr_def(path: str) -> AttrDef | None:
    """The definition of a dot path (``primaryAddress.city``), or None when the schema has no such path."""
    defs = USER_ATTR_DEFS
    found: AttrDef | None = None
    for part in path.split("."):
        found = next((d for d in defs if d["name"] == part), None)
        if found is None:
            return None
        defs = found.get("attr_defs", [])
    return found


def is_known(path: str) -> bool:
    """Whether the schema has the dot path ``path``."""
    return attr_def(path) is not None


def is_unique(path: str) -> bool:
    """Whether ``path`` can be a ``key_attribute`` (its values identify one record)."""
    found = attr_def(path)
    return found is not None and (found["type"] == "id" or "unique" in found["constraints"])


def unknown_paths(attributes: dict[str, Any], prefix: str = "") -> list[str]:
    """The dot paths of ``attributes`` that the schema lacks (objects are walked; plurals are taken whole)."""
    unknown: list[str] = []
    for key, value in attributes.items():
        path = f"{prefix}{key}"
        found = attr_def(path)
        if found is None:
            unknown.append(path)
        elif found["type"] == "object" and isinstance(value, dict):
            unknown += unknown_paths(value, f"{path}.")
    return unknown
