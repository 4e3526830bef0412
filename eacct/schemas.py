"""Request and response shapes shared by the REST handlers, the CLI and the OpenAPI document."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from eacct.text import plain_text

__all__ = ["Account", "Nickname", "Password", "PlainText", "Strict"]


class Strict(BaseModel):
    """Request bodies: unknown fields are refused, strings are not coerced from numbers."""

    model_config = ConfigDict(extra="forbid", strict=True)


Account = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@-]{3,32}$")]
Password = Annotated[str, StringConstraints(min_length=6, max_length=128)]
# Text others will read: no control characters, bidi controls or lone surrogates (eacct.text).
PlainText = AfterValidator(plain_text)
Nickname = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20), PlainText]
MemberId = Annotated[int, Field(ge=1, le=2**31 - 1)]
