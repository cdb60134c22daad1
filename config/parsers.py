"""The JSON parser of every DRF endpoint: DRF's, with a body nested too deeply for Python's
recursive decoder answered as a 400 (docs/security.md, finding 8) instead of a RecursionError
(a 500)."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, parsers


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None
