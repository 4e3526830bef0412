"""Request and response shapes shared by the REST handlers, the CLI and the OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any

from datetime import date, datetime

from pydantic import (
    BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, PlainSerializer, StringConstraints,
    WithJsonSchema,
)
from pydantic_core import core_schema

from eacct.formats import iso
from eacct.text import PLAIN_TEXT_PATTERN, plain_text

__all__ = [
    "Account", "DateOut", "LedgerIdOut", "Nickname", "Out", "Password", "PlainText", "Sha256Out", "Strict", "TimeOut",
    "YearOut",
]


class Strict(BaseModel):
    """Request bodies: unknown fields are refused, strings are not coerced from numbers."""

    model_config = ConfigDict(extra="forbid", strict=True)


Account = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@-]{3,32}$")]
Password = Annotated[str, StringConstraints(min_length=6, max_length=128)]


class _PlainText:
    """`Annotated` marker for text others will read: the rule of eacct.text (no control characters, bidi
    controls or lone surrogates), validated and documented as a pattern from that one place."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(plain_text, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict:
        json_schema = handler(schema)
        json_schema["pattern"] = PLAIN_TEXT_PATTERN
        return json_schema


PlainText = _PlainText()
Nickname = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20), PlainText]
MemberId = Annotated[int, Field(ge=1, le=2**31 - 1)]



class Out(BaseModel):
    """Answers: read from the domain objects the services return (dataclasses and ORM rows)."""

    model_config = ConfigDict(from_attributes=True)


# Answer fields, exactly as the handlers write them (API.md conventions).
LedgerIdOut = Annotated[str, Field(json_schema_extra={"format": "uuid"})]
TimeOut = Annotated[datetime, PlainSerializer(iso, return_type=str), WithJsonSchema(
    {"type": "string", "format": "date-time", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"})]
DateOut = Annotated[date, WithJsonSchema({"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"})]
Sha256Out = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
YearOut = Annotated[int, Field(ge=1990, le=2100)]
