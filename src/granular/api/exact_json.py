"""JSON in and out: bodies whose numbers stay exact, answers that always encode.

Starlette parses a body with `json.loads`, which turns `1234.0000000000001` into the float
`1234.0`: a fraction of a Wh would then be rounded away before the rules see it (DESIGN.md
§4: a fraction is an error, never a rounding). Routers built with `route_class=ExactJSONRoute`
parse every JSON number with a fraction or exponent as a `Decimal`, digit for digit.

`SafeJSONResponse` writes a string holding an unpaired surrogate (valid in a JSON string,
`"\\ud800"`, but not encodable as UTF-8) as that escape instead of failing with a 500 while
an error that names the offending value is being rendered.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute


class ExactJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), parse_float=Decimal)
        return self._json


class ExactJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact(request: Request) -> Response:
            return await handler(ExactJSONRequest(request.scope, request.receive))

        return exact


class SafeJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8", "backslashreplace")
