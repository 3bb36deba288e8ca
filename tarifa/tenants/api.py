"""Customers API: validates input, delegates to services and selectors, shapes the answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema, Status

from tarifa.core.pagination import paginate
from tarifa.core.schemas import ErrorOut
from tarifa.tenants import selectors, services

router = Router(tags=["customers"])


class CustomerIn(Schema):
    external_id: str
    name: str = ""
    email: str = ""
    phone: str = ""
    metadata: dict[str, Any] = {}
    billing_mode: str | None = None


class CustomerPatch(Schema):
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    metadata: dict[str, Any] | None = None
    billing_mode: str | None = None


class CustomerOut(Schema):
    external_id: str
    name: str
    email: str
    phone: str
    metadata: dict[str, Any]
    billing_mode: str
    created_at: datetime
    updated_at: datetime


class CustomerPage(Schema):
    items: list[CustomerOut]
    next_cursor: str | None


@router.post("", response={200: CustomerOut, 201: CustomerOut, 409: ErrorOut, 422: ErrorOut})
def create_customer(request: HttpRequest, payload: CustomerIn):
    customer, created = services.create_customer(tenant=request.tenant, **payload.dict())
    return Status(201 if created else 200, customer)


@router.get("", response=CustomerPage)
def list_customers(request: HttpRequest, cursor: str | None = None, limit: int = 50):
    return paginate(selectors.customers(tenant=request.tenant), cursor=cursor, limit=limit)


@router.get("/{external_id}", response={200: CustomerOut, 404: ErrorOut})
def get_customer(request: HttpRequest, external_id: str):
    return selectors.customer_by_external_id(tenant=request.tenant, external_id=external_id)


@router.patch("/{external_id}", response={200: CustomerOut, 404: ErrorOut, 422: ErrorOut})
def update_customer(request: HttpRequest, external_id: str, payload: CustomerPatch):
    customer = selectors.customer_by_external_id(tenant=request.tenant, external_id=external_id)
    return services.update_customer(customer=customer, **payload.dict(exclude_unset=True))
