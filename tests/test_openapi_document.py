"""Item 17: the OpenAPI document is complete and exact — every header an upload or download reads, typed path
and query parameters, and every status an operation can answer listed with the error schema, no `default`."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from eacct.app import create_app
from eacct.config import Settings
from eacct.openapi import openapi_document

UPLOADS = ["/api/v1/backups/{ledger_id}/years/{year}/versions", "/api/v1/cloud-shares/{ledger_id}/years/{year}/versions"]
DOWNLOADS = ["/api/v1/backups/{ledger_id}/years/{year}/versions/{version_id}/content",
             "/api/v1/cloud-shares/{ledger_id}/years/{year}/versions/{version_id}/content"]
# API.md's tables, plus the additions the server serves (chunks/missing).
API_MD_OPERATIONS = {
    "post /api/v1/members", "post /api/v1/sessions", "delete /api/v1/sessions/current", "get /api/v1/me",
    "patch /api/v1/me", "get /api/v1/netdisk", "post /api/v1/netdisk", "get /api/v1/netdisk/questions",
    "post /api/v1/netdisk/unlock", "post /api/v1/netdisk/reset", "put /api/v1/netdisk/password",
    "get /api/v1/netdisk/deletions", "get /api/v1/backups", "get /api/v1/backups/{ledger_id}",
    "patch /api/v1/backups/{ledger_id}", "delete /api/v1/backups/{ledger_id}",
    "get /api/v1/backups/{ledger_id}/years/{year}", "delete /api/v1/backups/{ledger_id}/years/{year}",
    "post " + UPLOADS[0], "get " + DOWNLOADS[0], "get /api/v1/friends", "post /api/v1/friends",
    "delete /api/v1/friends/{member_id}", "post /api/v1/shares", "get /api/v1/shares", "delete /api/v1/shares/{share_id}",
    "get /api/v1/cloud-shares", "get " + DOWNLOADS[1], "post " + UPLOADS[1], "get /api/v1/messages",
    "post /api/v1/messages/{id}/read", "post /api/v1/backups/{ledger_id}/years/{year}/chunks/missing",
    "post /api/v1/cloud-shares/{ledger_id}/years/{year}/chunks/missing", "get /healthz",
}
CHUNK_DOWNLOADS = [side + "/{ledger_id}/years/{year}/versions/{version_id}" for side in ("/api/v1/backups", "/api/v1/cloud-shares")]


@pytest.fixture(scope="module")
def document() -> dict:
    app = create_app(Settings(database_url="sqlite+aiosqlite:///unused.db", storage_url="file:///nonexistent"))
    document = openapi_document(app)
    validate(document)
    return document


def operations(document: dict):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield f"{method} {path}", operation


def parameter(operation: dict, where: str, name: str) -> dict:
    found = [p for p in operation.get("parameters", []) if p["in"] == where and p["name"] == name]
    assert found, f"{where} parameter {name} is not documented"
    return found[0]


def test_every_api_md_operation_is_documented(document):
    assert API_MD_OPERATIONS <= {name for name, _ in operations(document)}


def test_no_catch_all_default_response_and_every_error_has_the_error_schema(document):
    for name, operation in operations(document):
        assert "default" not in operation["responses"], name
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (name, status)


def test_path_parameters_are_typed(document):
    for name, operation in operations(document):
        for param in operation.get("parameters", []):
            if param["name"] == "ledger_id":
                assert param["schema"] == {"type": "string", "format": "uuid"}, name
            if param["name"] == "year":
                assert param["schema"] == {"type": "integer", "minimum": 1990, "maximum": 2100}, name
            if param["name"] in ("member_id", "id"):
                assert param["schema"]["type"] == "integer", name


def test_message_filters_are_repeatable_enums(document):
    operation = document["paths"]["/api/v1/messages"]["get"]
    assert parameter(operation, "query", "status")["schema"]["items"]["enum"] == ["unread", "read"]
    assert parameter(operation, "query", "kind")["schema"]["items"]["enum"] == ["system", "personal"]
    assert parameter(operation, "query", "kind")["explode"] is True


@pytest.mark.parametrize("path", UPLOADS)
def test_uploads_document_their_headers_media_types_and_refusals(document, path):
    operation = document["paths"][path]["post"]
    assert parameter(operation, "header", "X-Content-SHA256")["required"] is True
    for header in ("X-Remark", "X-Ledger-Name", "If-Match", "X-Client-Version", "X-Archive-Size"):
        assert parameter(operation, "header", header)["required"] is False
    assert set(operation["requestBody"]["content"]) == {"application/octet-stream", "application/x-eacct-delta"}
    assert {"201", "400", "401", "403", "404", "408", "409", "412", "413", "422", "503"} <= set(operation["responses"])
    assert "Retry-After" in operation["responses"]["503"]["headers"]


@pytest.mark.parametrize("path", DOWNLOADS)
def test_downloads_document_ranges_and_conditional_answers(document, path):
    operation = document["paths"][path]["get"]
    parameter(operation, "header", "Range")
    parameter(operation, "header", "If-None-Match")
    assert {"200", "206", "304", "401", "403", "404", "416", "422", "503"} <= set(operation["responses"])
    assert operation["responses"]["206"]["content"]["application/octet-stream"]
    assert "ETag" in operation["responses"]["200"]["headers"]


@pytest.mark.parametrize("path", ["/api/v1/backups/{ledger_id}", "/api/v1/backups/{ledger_id}/years/{year}"])
def test_deletions_document_the_password_header(document, path):
    operation = document["paths"][path]["delete"]
    assert parameter(operation, "header", "X-Netdisk-Password")["required"] is True
    assert {"204", "401", "403", "404", "422", "429"} <= set(operation["responses"])


def test_an_existing_friend_answers_200_and_a_new_one_201(document):
    responses = document["paths"]["/api/v1/friends"]["post"]["responses"]
    assert responses["200"]["content"] == responses["201"]["content"]
    assert {"404", "422", "429"} <= set(responses)


@pytest.mark.parametrize("operation_name", ["post /api/v1/sessions", "post /api/v1/members", "post /api/v1/netdisk/unlock",
                                            "post /api/v1/netdisk/reset"])
def test_password_checks_document_busy_and_too_many_attempts(document, operation_name):
    method, path = operation_name.split(" ")
    responses = document["paths"][path][method]["responses"]
    assert "Retry-After" in responses["503"]["headers"] and "Retry-After" in responses["429"]["headers"]


def test_bad_input_is_422_wherever_there_is_input(document):
    for name, operation in operations(document):
        if operation.get("parameters") or operation.get("requestBody"):
            assert "422" in operation["responses"], name


def test_answers_are_typed_as_they_are_written(document):
    schemas = document["components"]["schemas"]
    version = schemas["VersionOut"]["properties"]
    assert version["ledger_id"]["format"] == "uuid"
    assert version["year"] == {"maximum": 2100, "minimum": 1990, "title": "Year", "type": "integer"}
    assert version["via"]["enum"] == ["backup", "share"]
    assert schemas["MessageOut"]["properties"]["kind"]["enum"] == ["system", "personal"]


@pytest.mark.parametrize("path", CHUNK_DOWNLOADS)
def test_chunk_level_downloads_document_the_manifest_and_the_chunk_stream(document, path):
    manifest = document["paths"][path + "/manifest"]["get"]
    assert manifest["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ManifestOut"}
    assert {"200", "401", "403", "404", "422"} <= set(manifest["responses"])
    chunks = document["paths"][path + "/chunks"]["post"]
    assert chunks["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ChunkBatch"}
    assert set(chunks["responses"]["200"]["content"]) == {"application/octet-stream", "application/zstd"}
    assert {"200", "400", "401", "403", "404", "413", "422", "503"} <= set(chunks["responses"])
    assert "206" not in chunks["responses"]  # a batch of chunks has no ranges
    schemas = document["components"]["schemas"]
    assert schemas["ChunkBatch"]["properties"]["chunks"]["maxItems"] == 4096
    assert schemas["ManifestOut"]["properties"]["chunks"]["items"] == {"$ref": "#/components/schemas/ManifestChunk"}
    assert schemas["ManifestChunk"]["properties"]["sha256"]["pattern"] == "^[0-9a-f]{64}$"


@pytest.mark.parametrize("side", ["/api/v1/backups", "/api/v1/cloud-shares"])
def test_upload_sessions_are_documented_with_their_bodies_and_refusals(document, side):
    uploads = side + "/{ledger_id}/years/{year}/uploads"
    opened = document["paths"][uploads]["post"]
    assert opened["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/UploadSessionIn"}
    assert {"201", "401", "403", "404", "409", "412", "413", "422"} <= set(opened["responses"])
    assert {"200", "401", "403", "404"} <= set(document["paths"][uploads + "/{upload_id}"]["get"]["responses"])
    for operation in (document["paths"][uploads + "/{upload_id}/chunks"]["put"],
                      document["paths"][uploads + "/{upload_id}/commit"]["post"]):
        assert set(operation["requestBody"]["content"]) == {"application/octet-stream"}
        assert {"400", "401", "403", "404", "408", "409", "413", "422", "503"} <= set(operation["responses"])
        assert parameter(operation, "path", "upload_id")["schema"] == {"type": "string", "pattern": "^[0-9a-f]{32}$"}
    assert "201" in document["paths"][uploads + "/{upload_id}/commit"]["post"]["responses"]
