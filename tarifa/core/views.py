"""Django's error views where Tarifa answers differently: the API speaks JSON {code, message}."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from django.views.defaults import bad_request as django_bad_request, page_not_found


def bad_request(request, exception):
    """A body beyond TARIFA_API_MAX_BODY_BYTES is a 413 that says so (Django made it a bare 400
    page); other 400s keep Django's page, or are JSON on the API."""
    api = request.path_info.startswith("/api/")
    if isinstance(exception, RequestDataTooBig):
        message = (f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes "
                   "(TARIFA_API_MAX_BODY_BYTES); send fewer records per call.")
        if api:
            return JsonResponse({"code": "body_too_large", "message": message}, status=413)
        return HttpResponse(message, status=413, content_type="text/plain")
    if api:
        return JsonResponse({"code": "bad_request", "message": "The request could not be read."}, status=400)
    return django_bad_request(request, exception)


def not_found(request, exception):
    """An address under /api/ that names no operation is JSON too (Django's page was HTML)."""
    if request.path_info.startswith("/api/"):
        return JsonResponse({"code": "not_found", "message": f"No API operation at {request.path_info}."}, status=404)
    return page_not_found(request, exception)
