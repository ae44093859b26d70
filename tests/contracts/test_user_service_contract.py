"""The users service's generated OpenAPI keeps every promise of the seed's User Service OpenAPI.

The seed is OpenAPI 3.0 (``nullable: true``); FastAPI writes OpenAPI 3.1 (``anyOf`` with
``{"type": "null"}``, or a list of types). Both are normalised to one shape before comparing.

Rules, per seed operation:

* the path and method exist; every seed status code is documented;
* seed path parameters exist with the same ``in``/``required`` and type/format; the generated
  operation requires no parameter the seed does not know about;
* request bodies: required when the seed's is; every seed property exists with the same
  type and format, and the seed's ``pattern``/``minLength``/``enum`` (extra hardening such as
  ``maxLength`` is allowed); optional properties may also accept ``null``; extra properties
  are allowed, but the ``required`` list must be exactly the seed's;
* response bodies: every seed property exists with the same type (nullability included),
  format and ``enum``; ``required`` may only grow. Error answers are ``application/problem+json``
  (RFC 9457) where the seed wrote ``application/json``: any JSON media type is accepted;
* an operation the seed secures with ``BearerAuth`` requires it; an open one requires nothing;
  ``BearerAuth`` is an HTTP bearer scheme with bearer format JWT.

A failing comparison lists every mismatch, not only the first.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from panthera.runtime.documents import openapi_documents

HERE = Path(__file__).resolve().parent
SEED_COPY = HERE / "seed" / "user-service.openapi.yaml"
SHARED_SEED = Path(__file__).resolve().parents[3] / "shared/seed/user-service.openapi.yaml"

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
# Validation keywords that must equal the seed's when the seed declares them.
SEED_DECLARED = ("pattern", "minLength", "enum")
Document = dict[str, Any]
Schema = dict[str, Any]


# ----------------------------------------------------------------------------- normalising


def _resolve(document: Document, schema: Schema) -> Schema:
    """The schema with its ``$ref`` chain followed (3.1 siblings of ``$ref`` are kept)."""
    seen: set[str] = set()
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/") or ref in seen:
            raise ValueError(f"unsupported or cyclic $ref {ref!r}")
        seen.add(ref)
        node: Any = document
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _normalise(document: Document, schema: Schema) -> Schema:
    """One shape for both dialects: ``types`` is a set that holds ``"null"`` when nullable."""
    schema = _resolve(document, schema)
    types: set[str] = set()
    for union in ("anyOf", "oneOf"):
        if union not in schema:
            continue
        branches = [_resolve(document, branch) for branch in schema[union]]
        concrete = [branch for branch in branches if branch.get("type") != "null"]
        if len(concrete) < len(branches):
            types.add("null")
        outer = {k: v for k, v in schema.items() if k != union}
        if len(concrete) == 1:
            schema = {**outer, **concrete[0]}
        else:  # a real union: keep it visible as such
            schema = {**outer, "type": f"{union}({len(concrete)})"}
    declared = schema.get("type")
    if isinstance(declared, list):
        types.update(declared)
    elif declared is not None:
        types.add(declared)
    if schema.get("nullable") is True:
        types.add("null")
    return {**schema, "types": types}


def _json_schema(document: Document, content: dict[str, Any]) -> Schema | None:
    """The schema of a body's JSON media type (``application/json`` or ``*/*+json``)."""
    for media_type, body in content.items():
        base = media_type.split(";")[0].strip().lower()
        if base == "application/json" or base.endswith("+json"):
            schema = body.get("schema")
            return None if schema is None else dict(schema)
    return None


# ----------------------------------------------------------------------------- comparing


def _compare_schema(
    seed_doc: Document,
    seed_schema: Schema,
    gen_doc: Document,
    gen_schema: Schema,
    *,
    where: str,
    request: bool,
    optional: bool,
    mismatches: list[str],
) -> None:
    seed = _normalise(seed_doc, seed_schema)
    gen = _normalise(gen_doc, gen_schema)

    seed_types, gen_types = seed["types"], gen["types"]
    if seed_types - {"null"}:
        if seed_types - {"null"} != gen_types - {"null"}:
            mismatches.append(
                f"{where}: type is {sorted(gen_types - {'null'})}, "
                f"the seed says {sorted(seed_types - {'null'})}"
            )
        if "null" in seed_types and "null" not in gen_types:
            mismatches.append(f"{where}: not nullable, the seed says nullable")
        if "null" in gen_types and "null" not in seed_types and not (request and optional):
            mismatches.append(f"{where}: nullable, the seed says not nullable")

    if seed.get("format") != gen.get("format"):
        mismatches.append(
            f"{where}: format is {gen.get('format')!r}, the seed says {seed.get('format')!r}"
        )
    for keyword in SEED_DECLARED:
        if keyword not in seed:
            continue
        expected, actual = seed[keyword], gen.get(keyword)
        if keyword == "enum":
            equal = actual is not None and set(expected) == set(actual)
        else:
            equal = expected == actual
        if not equal:
            mismatches.append(f"{where}: {keyword} is {actual!r}, the seed says {expected!r}")

    if "items" in seed:
        if "items" not in gen:
            mismatches.append(f"{where}: no items schema, the seed has one")
        else:
            _compare_schema(
                seed_doc,
                seed["items"],
                gen_doc,
                gen["items"],
                where=f"{where}[]",
                request=request,
                optional=False,
                mismatches=mismatches,
            )

    seed_properties: dict[str, Schema] = seed.get("properties", {})
    gen_properties: dict[str, Schema] = gen.get("properties", {})
    seed_required = set(seed.get("required", []))
    gen_required = set(gen.get("required", []))
    for name, seed_property in seed_properties.items():
        if name not in gen_properties:
            mismatches.append(f"{where}.{name}: missing (the seed declares it)")
            continue
        _compare_schema(
            seed_doc,
            seed_property,
            gen_doc,
            gen_properties[name],
            where=f"{where}.{name}",
            request=request,
            optional=name not in seed_required,
            mismatches=mismatches,
        )
    if seed_properties or seed_required:
        if request and seed_required != gen_required:
            mismatches.append(
                f"{where}: required is {sorted(gen_required)}, "
                f"the seed says exactly {sorted(seed_required)}"
            )
        if not request and not seed_required <= gen_required:
            mismatches.append(
                f"{where}: required {sorted(seed_required - gen_required)} "
                "are optional, the seed requires them"
            )


def _requires_bearer(document: Document, operation: dict[str, Any], scheme: str) -> bool:
    security = operation.get("security", document.get("security", []))
    return bool(security) and all(scheme in requirement for requirement in security)


def _is_open(document: Document, operation: dict[str, Any]) -> bool:
    security = operation.get("security", document.get("security", []))
    return not security or any(requirement == {} for requirement in security)


def _compare_parameters(
    seed_doc: Document,
    seed_op: dict[str, Any],
    gen_doc: Document,
    gen_op: dict[str, Any],
    where: str,
    mismatches: list[str],
) -> None:
    def by_key(document: Document, operation: dict[str, Any]) -> dict[tuple[str, str], Schema]:
        return {
            (p["in"], p["name"]): p
            for p in (_resolve(document, param) for param in operation.get("parameters", []))
        }

    seed_params, gen_params = by_key(seed_doc, seed_op), by_key(gen_doc, gen_op)
    for (location, name), seed_param in seed_params.items():
        label = f"{where} {location} parameter {name!r}"
        gen_param = gen_params.get((location, name))
        if gen_param is None:
            mismatches.append(f"{label}: missing")
            continue
        if bool(seed_param.get("required")) != bool(gen_param.get("required")):
            mismatches.append(
                f"{label}: required is {bool(gen_param.get('required'))}, "
                f"the seed says {bool(seed_param.get('required'))}"
            )
        _compare_schema(
            seed_doc,
            seed_param.get("schema", {}),
            gen_doc,
            gen_param.get("schema", {}),
            where=label,
            request=True,
            optional=not seed_param.get("required"),
            mismatches=mismatches,
        )
    for (location, name), gen_param in gen_params.items():
        if (location, name) not in seed_params and gen_param.get("required"):
            mismatches.append(
                f"{where} {location} parameter {name!r}: required, the seed does not have it"
            )


def contract_mismatches(seed: Document, generated: Document) -> list[str]:
    """Every way ``generated`` breaks a promise of ``seed`` (empty when it keeps them all)."""
    mismatches: list[str] = []

    seed_schemes = seed.get("components", {}).get("securitySchemes", {})
    gen_schemes = generated.get("components", {}).get("securitySchemes", {})
    for name, seed_scheme in seed_schemes.items():
        gen_scheme = gen_schemes.get(name)
        if gen_scheme is None:
            mismatches.append(f"securitySchemes.{name}: missing")
            continue
        for key in ("type", "scheme", "bearerFormat", "in", "name"):
            if key not in seed_scheme:
                continue
            expected, actual = seed_scheme[key], gen_scheme.get(key)
            if key == "scheme" and isinstance(actual, str):  # case-insensitive (RFC 7235)
                expected, actual = expected.lower(), actual.lower()
            if expected != actual:
                mismatches.append(
                    f"securitySchemes.{name}.{key} is {actual!r}, the seed says {expected!r}"
                )

    gen_components = generated.get("components", {}).get("schemas", {})
    for name in seed.get("components", {}).get("schemas", {}):
        if name not in gen_components:
            mismatches.append(f"components.schemas.{name}: missing (generated clients name it)")

    for path, seed_item in seed.get("paths", {}).items():
        gen_item = generated.get("paths", {}).get(path)
        if gen_item is None:
            mismatches.append(f"{path}: path missing")
            continue
        for method in METHODS:
            if method not in seed_item:
                continue
            seed_op = seed_item[method]
            where = f"{method.upper()} {path}"
            gen_op = gen_item.get(method)
            if gen_op is None:
                mismatches.append(f"{where}: operation missing")
                continue

            for requirement in seed_op.get("security", seed.get("security", [])):
                for scheme in requirement:
                    if not _requires_bearer(generated, gen_op, scheme):
                        mismatches.append(f"{where}: does not require security scheme {scheme}")
            if _is_open(seed, seed_op) and not _is_open(generated, gen_op):
                mismatches.append(f"{where}: requires authentication, the seed's is open")

            _compare_parameters(seed, seed_op, generated, gen_op, where, mismatches)

            if "requestBody" in seed_op:
                seed_body = _resolve(seed, seed_op["requestBody"])
                gen_body = _resolve(generated, gen_op.get("requestBody", {}))
                if not gen_body:
                    mismatches.append(f"{where}: request body missing")
                else:
                    if seed_body.get("required") and not gen_body.get("required"):
                        mismatches.append(f"{where}: request body optional, the seed requires it")
                    seed_schema = _json_schema(seed, seed_body.get("content", {}))
                    gen_schema = _json_schema(generated, gen_body.get("content", {}))
                    if seed_schema is not None and gen_schema is None:
                        mismatches.append(f"{where}: request body has no JSON schema")
                    elif seed_schema is not None and gen_schema is not None:
                        _compare_schema(
                            seed,
                            seed_schema,
                            generated,
                            gen_schema,
                            where=f"{where} request body",
                            request=True,
                            optional=False,
                            mismatches=mismatches,
                        )

            gen_responses = gen_op.get("responses", {})
            for status, seed_response in seed_op.get("responses", {}).items():
                status = str(status)
                gen_response = gen_responses.get(status)
                label = f"{where} {status} response"
                if gen_response is None:
                    mismatches.append(f"{where}: status {status} not documented")
                    continue
                seed_response = _resolve(seed, seed_response)
                gen_response = _resolve(generated, gen_response)
                seed_schema = _json_schema(seed, seed_response.get("content", {}))
                gen_schema = _json_schema(generated, gen_response.get("content", {}))
                if seed_schema is None:
                    if status.startswith("2") and gen_response.get("content"):
                        mismatches.append(f"{label}: has a body, the seed's has none")
                    continue
                if gen_schema is None:
                    mismatches.append(f"{label}: no JSON body schema")
                    continue
                _compare_schema(
                    seed,
                    seed_schema,
                    generated,
                    gen_schema,
                    where=f"{label} body",
                    request=False,
                    optional=False,
                    mismatches=mismatches,
                )
    return mismatches


# ----------------------------------------------------------------------------- fixtures


def _load_seed() -> Document:
    document: Document = yaml.safe_load(SEED_COPY.read_text(encoding="utf-8"))
    return document


@pytest.fixture(scope="module")
def seed() -> Document:
    return _load_seed()


@pytest.fixture(scope="module")
def users_openapi() -> Document:
    return openapi_documents()["users"]


# ----------------------------------------------------------------------------- tests


def test_seed_copy_is_verbatim() -> None:
    """The committed copy is the shared seed, byte for byte (when the shared seed is here)."""
    if not SHARED_SEED.exists():
        pytest.skip(f"no shared seed at {SHARED_SEED}; the committed copy stands alone")
    assert SEED_COPY.read_bytes() == SHARED_SEED.read_bytes(), (
        f"{SEED_COPY} differs from {SHARED_SEED}: copy the shared seed over it"
    )


def test_seed_is_the_openapi_30_user_service(seed: Document) -> None:
    assert str(seed["openapi"]).startswith("3.0")
    assert set(seed["paths"]) == {"/register", "/login", "/profiles", "/profiles/{userId}"}


def test_users_openapi_keeps_every_promise_of_the_seed(
    seed: Document, users_openapi: Document
) -> None:
    mismatches = contract_mismatches(seed, users_openapi)
    assert not mismatches, (
        f"the users service's OpenAPI breaks the seed's contract in {len(mismatches)} place(s):\n  "
        + "\n  ".join(mismatches)
    )


def test_users_openapi_is_served_under_the_gateway_prefix(users_openapi: Document) -> None:
    assert str(users_openapi["openapi"]).startswith("3.1")
    assert users_openapi.get("servers") == [{"url": "/api/v1/users"}]


def test_errors_are_problem_details_with_the_seed_fields(
    seed: Document, users_openapi: Document
) -> None:
    """Every documented error answer is ``application/problem+json`` with ``ErrorResponse``."""
    mismatches: list[str] = []
    _compare_schema(
        seed,
        {"$ref": "#/components/schemas/ErrorResponse"},
        users_openapi,
        {"$ref": "#/components/schemas/ErrorResponse"},
        where="ErrorResponse",
        request=False,
        optional=False,
        mismatches=mismatches,
    )
    for path, item in users_openapi["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if not status.startswith(("4", "5")):
                    continue
                content = response.get("content", {})
                schema = content.get("application/problem+json", {}).get("schema")
                if schema != {"$ref": "#/components/schemas/ErrorResponse"}:
                    mismatches.append(
                        f"{method.upper()} {path} {status}: not problem+json ErrorResponse"
                    )
    assert not mismatches, "\n  ".join(["error documentation:", *mismatches])


# ----------------------------------------------------------------------------- the comparator


def _mutated(document: Document, change: Any) -> Document:
    copied = copy.deepcopy(document)
    change(copied)
    return copied


def _schemas(document: Document) -> dict[str, Schema]:
    found: dict[str, Schema] = document["components"]["schemas"]
    return found


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["paths"].pop("/login"), "/login: path missing"),
        (lambda d: d["paths"]["/profiles/{userId}"].pop("delete"), "DELETE /profiles/{userId}"),
        (
            lambda d: d["paths"]["/register"]["post"]["responses"].pop("409"),
            "POST /register: status 409 not documented",
        ),
        (
            lambda d: d["paths"]["/profiles"]["get"].pop("security"),
            "GET /profiles: does not require security scheme BearerAuth",
        ),
        (
            lambda d: d["components"]["securitySchemes"]["BearerAuth"].update(bearerFormat="X"),
            "securitySchemes.BearerAuth.bearerFormat",
        ),
        (
            lambda d: _schemas(d)["UserRegistrationRequest"]["properties"]["password"].update(
                minLength=6
            ),
            ".password: minLength is 6, the seed says 8",
        ),
        (
            lambda d: _schemas(d)["UserRegistrationRequest"]["required"].append("phoneNumber"),
            "POST /register request body: required is",
        ),
        (
            lambda d: _schemas(d)["UserResponse"]["properties"].update(
                phoneNumber={"type": "string"}
            ),
            ".phoneNumber: not nullable, the seed says nullable",
        ),
        (
            lambda d: _schemas(d)["Role"].update(enum=["USER", "ADMIN"]),
            ".roles[]: enum is",
        ),
        (
            lambda d: _schemas(d)["ErrorResponse"]["properties"].pop("code"),
            ".code: missing",
        ),
        (
            lambda d: _schemas(d)["UserResponse"]["properties"]["createdAt"].pop("format"),
            ".createdAt: format is None, the seed says 'date-time'",
        ),
    ],
)
def test_the_comparator_reports_broken_promises(
    seed: Document, users_openapi: Document, change: Any, expected: str
) -> None:
    mismatches = contract_mismatches(seed, _mutated(users_openapi, change))
    assert any(expected in mismatch for mismatch in mismatches), mismatches


def test_nullable_30_and_31_spellings_are_equivalent() -> None:
    seed_doc: Document = {}
    mismatches: list[str] = []
    for spelling in (
        {"anyOf": [{"type": "string"}, {"type": "null"}]},
        {"type": ["string", "null"]},
        {"oneOf": [{"type": "null"}, {"type": "string"}], "title": "Phone"},
    ):
        _compare_schema(
            seed_doc,
            {"type": "string", "nullable": True},
            {},
            spelling,
            where="x",
            request=False,
            optional=False,
            mismatches=mismatches,
        )
    assert mismatches == []
