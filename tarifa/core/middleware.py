"""Refuses requests carrying a NUL character (see core.text) before any view can try to store it."""

from __future__ import annotations

import json

from django.http import HttpResponseBadRequest, JsonResponse

from tarifa.core.text import NUL, NUL_REFUSED, nul_path

# Bodies whose records are answered one by one: a NUL rejects its record there, not the call.
PER_RECORD_BODIES = {("POST", "/api/v1/usage")}


class RejectNulMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        api = request.path_info.startswith("/api/")
        if NUL in request.path_info or _nul_field(request.GET) is not None:
            if api:
                return JsonResponse({"code": "invalid_text", "message": f"The address {NUL_REFUSED}"}, status=400)
            return HttpResponseBadRequest(f"The address {NUL_REFUSED}")
        writes = request.method in ("POST", "PUT", "PATCH")
        if api and writes and (request.method, request.path_info) not in PER_RECORD_BODIES:
            field = _nul_in_body(request)
            if field is not None:
                return JsonResponse({"code": "invalid_text", "field": field or None,
                                     "message": f"{field or 'The body'} {NUL_REFUSED}"}, status=422)
        return self.get_response(request)


def _nul_field(data) -> str | None:
    """The first key of a QueryDict whose name or a value holds a NUL."""
    for key, values in data.lists():
        if NUL in key or any(NUL in value for value in values):
            return key
    return None


def _nul_in_body(request) -> str | None:
    body = request.body
    if b"\\u0000" in body:  # JSON writes a NUL so
        try:
            return nul_path(json.loads(body))
        except ValueError:  # not JSON after all: the view refuses it
            return None
    if b"%00" in body or b"\x00" in body:  # a form
        return _nul_field(request.POST)
    return None
