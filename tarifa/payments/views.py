"""Gateways' webhooks: `POST /webhooks/pagseguro/{tenant}`.

The notification carries no status, only a code; it is stored once and resolved through the
gateway's API by a job (so its authenticity is the API's answer to our credential), then applied
through the same code path as polling."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from tarifa.payments.services.checking import receive_notification
from tarifa.tenants.models import Tenant


@csrf_exempt
@require_POST
def pagseguro_notification(request: HttpRequest, tenant: str):
    owner = Tenant.objects.filter(slug=tenant).first()
    if owner is None:
        return JsonResponse({"code": "tenant_not_found", "message": f"No tenant '{tenant}'."}, status=404)
    code = (request.POST.get("notificationCode") or "").strip()
    kind = (request.POST.get("notificationType") or "").strip()
    if not code or len(code) > 100:
        message = "notificationCode is required." if not code else "notificationCode is longer than 100 characters."
        return JsonResponse({"code": "invalid_notification", "message": message}, status=400)
    if kind != "transaction":
        return JsonResponse({"status": "ignored", "message": f"notificationType '{kind}' is not handled."})
    note = receive_notification(tenant=owner, gateway="pagseguro", code=code, notification_type=kind)
    return JsonResponse({"status": "received", "notification_id": note.id})
