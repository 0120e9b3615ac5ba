"""GET /api/openapi.json: the OpenAPI 3.1 document of the API, generated from itself.

Nothing here lists the resources: the document is made from the routes the API
application registered and from what each handler declares with `@endpoint`
(endpoint.py): its privileges, the media type it produces, the model it consumes and the
query parameters it reads. The model of a produced media type is the `Entity` subclass
whose `media.one` names it (or a `Collection` of the one whose `media.many` does), and
the schemas come from msgspec, so they are the wire names (camelCase) of what the
renderers actually write. A route that declares nothing gets a minimal description.

The document is built once, when the application starts (its routes are all known and
frozen by then), and served from memory.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from aiohttp import web

from abiquo_central.api.auth import ADMIN_DEFAULT_PRIVILEGES
from abiquo_central.api.endpoint import Endpoint, QueryParam, endpoint
from abiquo_central.api.errors import ERRORS, ErrorItem
from abiquo_central.api.links import API_PREFIX
from abiquo_central.api.media import Format, MediaName
from abiquo_central.api.model import Collection, Entity
from abiquo_central.api.version import __version__

OPENAPI_VERSION = "3.1.0"
TITLE = "Abiquo API"
JSON = "application/json"
_REF = "#/components/schemas/{name}"
_ENDPOINT_ATTRIBUTE = "__abiquo_endpoint__"

_log = structlog.get_logger("abiquo.central.api")

# The refusals every operation may answer with, by status: the component response
# that describes each.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("InvalidInput", "The request is invalid: a parameter or the body is wrong"),
    401: ("NotAuthenticated", "No credentials, or bad ones"),
    403: ("Forbidden", "The caller's role lacks a privilege the operation needs"),
    404: ("NotFound", "Nothing is there (or it belongs to another enterprise)"),
    406: ("NotAcceptable", "None of the representations in Accept can be produced"),
    409: ("Conflict", "The resource is in the wrong state, a duplicate, or a limit is hit"),
    415: ("UnsupportedMediaType", "The body is of a type the operation cannot read"),
    429: ("TooManyAttempts", "Too many failed logins: try again after Retry-After"),
    503: ("Unavailable", "A datacenter or another dependency is unavailable"),
}
# Only operations that need credentials can refuse them.
_AUTH_ERRORS = frozenset({401, 403, 429})

_SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "basic": {"type": "http", "scheme": "basic", "description": "HTTP Basic: nick and password"},
    "token": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`Token <t>`: the session token GET /api/login hands out",
    },
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Bearer <t>`: the session token GET /api/login hands out",
    },
    "cookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": "auth",
        "description": "The session token, as the cookie GET /api/login sets",
    },
}
_SECURITY: list[dict[str, list[str]]] = [{name: []} for name in _SECURITY_SCHEMES]

# aiohttp's pattern of a `{name}` variable that names no regex of its own.
_DEFAULT_VARIABLE = "[^{}/]+"
_DIGITS = (r"\d+", "[0-9]+")
_GROUP = re.compile(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>")


@dataclass
class _Document:
    """What the route serves: the encoded document, once the application has started."""

    body: bytes | None = None


DOCUMENT = web.AppKey("abiquo.api.openapi", _Document)


@dataclass
class _Models:
    """The schemas the document refers to, gathered while the operations are built."""

    types: list[Any] = field(default_factory=list)

    def ref(self, model: Any) -> dict[str, Any]:
        """A placeholder for `model`'s schema, resolved once every model is known."""
        if model not in self.types:
            self.types.append(model)
        return {"$model": self.types.index(model)}

    def resolve(self, document: dict[str, Any]) -> dict[str, Any]:
        """The document with each placeholder turned into a $ref, and the components.

        Each model's schemas are generated on their own and merged by name: two modules
        may each declare a class of the same name (msgspec cannot tell generics of such
        classes apart in one call), and a model msgspec cannot describe must not keep the
        API from starting, so it is described as anything.
        """
        components: dict[str, Any] = {}
        refs: list[dict[str, Any]] = []
        for model in self.types:
            try:
                (ref,), found = msgspec.json.schema_components([model], ref_template=_REF)
            except (TypeError, ValueError, KeyError):
                _log.warning("no schema for a model", model=repr(model), exc_info=True)
                refs.append({})
                continue
            renames = _merge(components, found)
            refs.append(_renamed(ref, renames))

        def walk(value: Any) -> Any:
            if isinstance(value, dict):
                if set(value) == {"$model"}:
                    return refs[value["$model"]]
                return {key: walk(item) for key, item in value.items()}
            if isinstance(value, list):
                return [walk(item) for item in value]
            return value

        resolved: dict[str, Any] = walk(document)
        resolved["components"]["schemas"] = dict(sorted(components.items()))
        return resolved


def _renamed(value: Any, renames: dict[str, str]) -> Any:
    """`value` with its $refs to renamed components pointing at their new names."""
    if not renames:
        return value
    if isinstance(value, dict):
        out = {key: _renamed(item, renames) for key, item in value.items()}
        ref = out.get("$ref")
        prefix = _REF.format(name="")
        if isinstance(ref, str) and ref.startswith(prefix) and ref[len(prefix) :] in renames:
            out["$ref"] = _REF.format(name=renames[ref[len(prefix) :]])
        return out
    if isinstance(value, list):
        return [_renamed(item, renames) for item in value]
    return value


def _merge(components: dict[str, Any], found: dict[str, Any]) -> dict[str, str]:
    """Add `found` to `components`: a name already there with another schema is renamed
    (name_2, ...), and so is whatever refers to it. Returns the renames."""
    renames: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for name, schema in found.items():
            body = _renamed(schema, renames)
            target = renames.get(name, name)
            if target in components and components[target] != body:
                n = 2
                while f"{name}_{n}" in components and components[f"{name}_{n}"] != body:
                    n += 1
                renames[name] = f"{name}_{n}"
                changed = True
    for name, schema in found.items():
        components.setdefault(renames.get(name, name), _renamed(schema, renames))
    return renames


def _entities() -> Iterator[type[Entity]]:
    pending = list(Entity.__subclasses__())
    seen: set[type[Entity]] = set()
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        pending.extend(cls.__subclasses__())
        if getattr(cls, "media", None) is not None:
            yield cls


def model_of(media: MediaName, *, near: str | None = None) -> Any | None:
    """The model rendered as `media`: an Entity, or a Collection of one; None if unknown.

    Two entities may share a media type (the user a login answers with, and the user of
    the users' resource): the one declared in module `near` (the handler's) wins.
    """
    candidates: list[tuple[bool, str, Any]] = []
    for cls in _entities():
        model: Any = None
        if cls.media.one == media:
            model = cls
        elif cls.media.many == media:
            model = Collection[cls]  # type: ignore[valid-type]
        if model is not None:
            candidates.append(
                (cls.__module__ != near, f"{cls.__module__}.{cls.__qualname__}", model)
            )
    if not candidates:
        return None
    return min(candidates, key=lambda c: (c[0], c[1]))[2]


def _content_types(media: MediaName) -> tuple[str, str]:
    return media.content_type(Format.JSON), media.content_type(Format.XML)


def _xml_schema(media: MediaName) -> dict[str, Any]:
    # The XML is the same model (api/xml.py): described loosely, by its root element.
    return {"type": "object", "xml": {"name": media.xml}}


def _query_schema(kind: type) -> dict[str, Any]:
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return {"type": "string", "enum": [member.name for member in kind]}
    if kind is bool:
        return {"type": "boolean"}
    if kind is int:
        return {"type": "integer"}
    if kind is float:
        return {"type": "number"}
    return {"type": "string"}


def _query_parameter(param: QueryParam) -> dict[str, Any]:
    described: dict[str, Any] = {
        "name": param.name,
        "in": "query",
        "required": param.required,
        "schema": _query_schema(param.type),
    }
    if param.description:
        described["description"] = param.description
    return described


def _variables(pattern: str) -> dict[str, str]:
    """Each named group of a compiled route pattern, with its own regex."""
    found: dict[str, str] = {}
    for match in _GROUP.finditer(pattern):
        depth, at = 1, match.end()
        while at < len(pattern) and depth:
            char = pattern[at]
            if char == "\\":
                at += 2
                continue
            depth += {"(": 1, ")": -1}.get(char, 0)
            at += 1
        found[match.group(1)] = pattern[match.end() : at - 1]
    return found


def _path_schema(regex: str) -> dict[str, Any]:
    if regex in _DIGITS:
        return {"type": "integer", "minimum": 0}
    if regex == _DEFAULT_VARIABLE:
        return {"type": "string", "minLength": 1, "pattern": f"^{_DEFAULT_VARIABLE}$"}
    return {"type": "string", "pattern": f"^(?:{regex})$"}


def _path(resource: web.AbstractResource) -> tuple[str, list[dict[str, Any]]]:
    """The path template (relative to the API's prefix) and its path parameters."""
    info = resource.get_info()
    template = str(info.get("formatter") or info.get("path") or resource.canonical)
    if template.startswith(f"{API_PREFIX}/"):
        template = template[len(API_PREFIX) :]
    pattern = info.get("pattern")
    variables = _variables(pattern.pattern) if pattern is not None else {}
    params = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(regex)}
        for name, regex in variables.items()
    ]
    return template, params


def _spec(handler: Any) -> Endpoint | None:
    spec = getattr(handler, _ENDPOINT_ATTRIBUTE, None)
    return spec if isinstance(spec, Endpoint) else None


def _tag(handler: Any) -> str:
    return str(getattr(handler, "__module__", "api")).rsplit(".", 1)[-1]


def _summary(handler: Any) -> str:
    doc = inspect.getdoc(handler)
    if doc:
        return doc.split("\n\n", 1)[0].replace("\n", " ")
    name = str(getattr(handler, "__name__", "operation")).replace("_", " ")
    return name[:1].upper() + name[1:]


def _success(method: str, spec: Endpoint, models: _Models, near: str) -> dict[str, Any]:
    produces = spec.produces
    if produces is None:
        # What the handler answers with is not declared: the bodiless successes.
        statuses = {"DELETE": ["204"], "POST": ["200", "201", "202", "204"]}.get(
            method, ["200", "204"]
        )
        return {status: {"description": "Done"} for status in statuses}
    model = model_of(produces, near=near)
    as_json, as_xml = _content_types(produces)
    content = {
        as_json: {"schema": models.ref(model)} if model is not None else {},
        as_xml: {"schema": _xml_schema(produces)},
    }
    statuses = {"POST": ["200", "201"]}.get(method, ["200"])
    described = {
        "200": f"The {produces.name}",
        "201": f"Created: the new {produces.name}; Location is its edit link",
    }
    answers = {
        status: {"description": described[status], "content": content} for status in statuses
    }
    if spec.accepted is not None:
        accepted = model_of(spec.accepted, near=near)
        as_json, as_xml = _content_types(spec.accepted)
        answers["202"] = {
            "description": f"Started: the {spec.accepted.name} links to the task",
            "content": {
                as_json: {"schema": models.ref(accepted)} if accepted is not None else {},
                as_xml: {"schema": _xml_schema(spec.accepted)},
            },
        }
        # Asked for the task's representation only, an answer with nothing to follow.
        answers["204"] = {"description": "Done at once: there is no task"}
    return answers


def _operation(
    method: str, handler: Any, path: str, path_params: list[dict[str, Any]], models: _Models
) -> dict[str, Any]:
    spec = _spec(handler)
    operation: dict[str, Any] = {
        "tags": [_tag(handler)],
        "summary": _summary(handler),
        "operationId": str(getattr(handler, "__name__", "operation")),
    }
    parameters = list(path_params)
    if spec is None:
        operation["description"] = "Not described: its handler declares nothing."
        if parameters:
            operation["parameters"] = parameters
        operation["responses"] = {"default": {"description": "Whatever the handler answers"}}
        operation["security"] = _SECURITY
        return operation
    privileges = sorted(spec.privileges)
    if not spec.public and not privileges and path.startswith("/admin/"):
        privileges = sorted(ADMIN_DEFAULT_PRIVILEGES)
    if spec.public:
        operation["description"] = "Public: served without credentials."
    elif privileges:
        operation["description"] = f"Needs the privileges {', '.join(privileges)}."
    else:
        operation["description"] = "Any authenticated user."
    operation["x-privileges"] = privileges
    parameters.extend(_query_parameter(param) for param in spec.query)
    if parameters:
        operation["parameters"] = parameters
    if spec.consumes is not None:
        media = spec.consumes.media.one
        as_json, as_xml = _content_types(media)
        operation["requestBody"] = {
            "required": True,
            "content": {
                as_json: {"schema": models.ref(spec.consumes)},
                as_xml: {"schema": _xml_schema(media)},
            },
        }
    responses = _success(method, spec, models, near=str(getattr(handler, "__module__", "")))
    if handler is get_openapi:
        responses = {"200": {"description": "This document", "content": {JSON: {"schema": {}}}}}
    for status, (name, _) in _ERRORS.items():
        if spec.public and status in _AUTH_ERRORS:
            continue
        responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
    operation["responses"] = responses
    operation["security"] = [] if spec.public else _SECURITY
    return operation


def _error_responses(models: _Models) -> dict[str, Any]:
    as_json, as_xml = _content_types(ERRORS)
    content = {
        as_json: {"schema": models.ref(Collection[ErrorItem])},
        as_xml: {"schema": _xml_schema(ERRORS)},
    }
    return {name: {"description": text, "content": content} for name, text in _ERRORS.values()}


def build_document(router: web.UrlDispatcher) -> dict[str, Any]:
    """The OpenAPI document of every route `router` holds, with paths relative to /api."""
    models = _Models()
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    tags: set[str] = set()
    for resource in router.resources():
        if not isinstance(resource, web.PlainResource | web.DynamicResource):
            continue
        path, path_params = _path(resource)
        routes = list(resource)
        served_by_get = {id(route.handler) for route in routes if route.method == "GET"}
        for route in routes:
            method = route.method.upper()
            if method == "HEAD" and id(route.handler) in served_by_get:
                continue  # aiohttp's implicit HEAD of a GET
            methods = ["GET", "POST", "PUT", "DELETE"] if method == "*" else [method]
            for each in methods:
                operation = _operation(each, route.handler, path, path_params, models)
                unique, n = operation["operationId"], 1
                while unique in operation_ids:
                    n += 1
                    unique = f"{operation['operationId']}_{n}"
                operation["operationId"] = unique
                operation_ids.add(unique)
                tags.update(operation["tags"])
                paths.setdefault(path, {})[each.lower()] = operation
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": TITLE,
            "version": __version__,
            "description": "The Abiquo REST API: every representation in JSON and XML "
            "(application/vnd.abiquo.<name>+json or +xml).",
        },
        "servers": [{"url": API_PREFIX}],
        "tags": [{"name": tag} for tag in sorted(tags)],
        "security": _SECURITY,
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": _SECURITY_SCHEMES,
            "responses": _error_responses(models),
        },
    }
    return models.resolve(document)


@endpoint(public=True)
async def get_openapi(request: web.Request) -> web.Response:
    """The OpenAPI document of this API."""
    body = request.app[DOCUMENT].body
    if body is None:
        # Served before startup completed (it cannot be, but never build per request).
        raise web.HTTPServiceUnavailable()
    return web.Response(body=body, content_type=JSON)


def _encoded(router: web.UrlDispatcher) -> bytes:
    return msgspec.json.encode(build_document(router))


async def _build(app: web.Application) -> None:
    # Tens of milliseconds with every route: off the loop (the router is frozen by now).
    app[DOCUMENT].body = await asyncio.to_thread(_encoded, app.router)


def setup(app: web.Application) -> None:
    """Serve GET /openapi.json, built when `app` starts from the routes it holds then."""
    app[DOCUMENT] = _Document()
    app.router.add_get("/openapi.json", get_openapi, name="openapi")
    app.on_startup.append(_build)
