"""Demo data: a Brazilian telephony tenant, plan and customers, and a generated Asterisk Master.csv."""

from __future__ import annotations

import csv
import random
from datetime import datetime, timedelta
from pathlib import Path

from django.utils import timezone

from tarifa.metering.services.folding import fold_all_pending
from tarifa.metering.services.importing import ImportReport, import_asterisk
from tarifa.metering.services.plans import create_plan, subscribe
from tarifa.tenants.models import Tenant
from tarifa.tenants.services import IssuedKey, create_customer, create_tenant

DEMO_SLUG = "demo-telecom"
THIRTY_SIX = {"unit": "second", "block_size": "60", "minimum": "30", "increment": "6"}
DEMO_RATES = [
    # kind, prefix, R$ per minute, description — São Paulo (DDD 11) numbering as dialled from a PBX.
    ("call.local", "", "0.09", "Local fixed line (any other number)", THIRTY_SIX),
    ("call.mobile", "9", "0.29", "Local mobile (9xxxx-xxxx)", THIRTY_SIX),
    ("call.long_distance", "0", "0.19", "Long distance (0 + carrier + DDD)", THIRTY_SIX),
    ("call.long_distance", "0219", "0.39", "Long distance to mobile, Rio via carrier 21", THIRTY_SIX),
    ("call.international", "00", "1.20", "International (00 + carrier + country)",
     {"unit": "second", "block_size": "60", "minimum": "60", "increment": "60"}),
]
DEMO_CUSTOMERS = [
    ("acct-1001", "Padaria Pão Quente Ltda", "+551133334444", "financeiro@paoquente.example"),
    ("acct-1002", "Clínica Sorriso", "+5511987650002", "contato@sorriso.example"),
    ("acct-1003", "Transportes Rápido S.A.", "+551140040003", "ti@rapido.example"),
    ("acct-1004", "Escritório Contábil Alves", "+5511912340004", "alves@contabil.example"),
]


def write_master_csv(*, path: Path, start: datetime, end: datetime, calls: int, seed: int = 7) -> Path:
    """Write an Asterisk cdr_csv Master.csv with `calls` calls between start and end (local time)."""
    rng = random.Random(seed)
    heavy = DEMO_CUSTOMERS[2][0]  # a call centre that goes past its allowance
    destinations = [("3", 8), ("9", 9), ("02111", 8), ("02198", 9), ("0021", 10), ("001", 10)]
    span = max(1, int((end - start).total_seconds()))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        for n in range(calls):
            account = heavy if rng.random() < 0.55 else rng.choice(DEMO_CUSTOMERS)[0]
            prefix, length = rng.choices(destinations, weights=[40, 35, 10, 8, 4, 3])[0]
            dst = prefix + "".join(rng.choice("0123456789") for _ in range(length))
            began = start + timedelta(seconds=rng.randrange(span))
            disposition = rng.choices(["ANSWERED", "NO ANSWER", "BUSY", "FAILED"], weights=[80, 12, 6, 2])[0]
            billsec = int(rng.expovariate(1 / 150)) + 1 if disposition == "ANSWERED" else 0
            ring = rng.randint(2, 20)
            answer = began + timedelta(seconds=ring) if billsec else None
            finish = began + timedelta(seconds=ring + billsec)
            writer.writerow([
                account, f"11{rng.randint(30000000, 39999999)}", dst, "from-internal", f'"{account}" <1000>',
                f"SIP/{account}-{n:08x}", f"SIP/trunk-{n:08x}", "Dial", f"SIP/trunk/{dst},60",
                began.strftime("%Y-%m-%d %H:%M:%S"), answer.strftime("%Y-%m-%d %H:%M:%S") if answer else "",
                finish.strftime("%Y-%m-%d %H:%M:%S"), ring + billsec, billsec, disposition, "DOCUMENTATION",
                f"{int(began.timestamp())}.{n}", "",
            ])
    return path


def create_demo(*, var_dir: Path, calls: int = 3000) -> tuple[Tenant, IssuedKey, ImportReport, Path]:
    tenant, issued = create_tenant(name="Demo Telecom", slug=DEMO_SLUG, timezone_name="America/Sao_Paulo")
    plan = create_plan(
        tenant=tenant, code="pbx-basico", name="PBX Básico — 1.000 minutos", currency="BRL",
        rates=[{"kind": k, "destination_prefix": p, "price": price, "description": d, "rounding": "half_up", **terms}
               for k, p, price, d, terms in DEMO_RATES],
        allowances=[{"code": "minutos-nacionais", "kinds": ["call.local", "call.mobile", "call.long_distance"],
                     "quantity": "60000"}],
    )
    now_local = timezone.now().astimezone(tenant.tzinfo).replace(tzinfo=None)
    month_start = now_local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    for external_id, name, phone, email in DEMO_CUSTOMERS:
        customer, _ = create_customer(tenant=tenant, external_id=external_id, name=name, phone=phone, email=email)
        subscribe(customer=customer, plan=plan, starts_on=month_start.date())
    path = write_master_csv(path=var_dir / "demo" / "Master.csv", start=month_start,
                            end=max(now_local, month_start + timedelta(hours=1)), calls=calls)
    with path.open(newline="") as stream:
        report = import_asterisk(tenant=tenant, stream=stream)
    fold_all_pending(batch_size=1000, folded_by="demo")
    return tenant, issued, report, path
