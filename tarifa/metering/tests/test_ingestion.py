from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from tarifa.metering.models import UsageRecord
from tarifa.metering.services.folding import fold_all_pending
from tarifa.metering.tests.conftest import at, call

pytestmark = pytest.mark.django_db


def test_each_record_gets_its_own_answer(api, customers):
    records = [
        call("r1", "c1", 45, at(1)),
        call("r2", "c1", "12.5", at(1, 1), "987654321"),
        {"id": "r3", "customer": "c1", "kind": "call", "quantity": -1, "occurred_at": at(1).isoformat()},
        {"id": "r4", "customer": "c1", "kind": "Bad Kind", "quantity": 1, "occurred_at": at(1).isoformat()},
        {"id": "r5", "customer": "c1", "kind": "call", "quantity": 1, "occurred_at": "2025-12-01T10:00:00"},
        {"customer": "c1", "kind": "call", "quantity": 1, "occurred_at": at(1).isoformat()},
        "not an object",
    ]
    body = api.post("/api/v1/usage", {"records": records}).json()
    assert [(r["id"], r["status"], r["code"]) for r in body["results"]] == [
        ("r1", "accepted", None), ("r2", "accepted", None), ("r3", "rejected", "invalid_quantity"),
        ("r4", "rejected", "invalid_kind"), ("r5", "rejected", "invalid_occurred_at"),
        ("", "rejected", "missing_id"), ("", "rejected", "invalid_record"),
    ]
    assert (body["accepted"], body["rejected"]) == (2, 5)
    assert all(r["message"] for r in body["results"] if r["status"] == "rejected")


def test_a_quantity_is_a_plain_decimal_number(api, customers):
    """Decimal() alone had taken "1_000" as 1000, Arabic-Indic digits as 12 and "NaN" as a number
    (refused later, as negative-or-too-precise); text no billing system writes for a count."""
    sent = {"plain": "45", "decimal": "12.5", "exponent": "1e3", "spaced": " 7 ", "json-float": 2.25,
            "underscore": "1_000", "arabic-indic": "\u0661\u0662", "fullwidth": "\uff14\uff15", "nan": "NaN",
            "hex": "0x10", "infinity": "Infinity", "empty": "", "negative": "-1"}
    body = api.post("/api/v1/usage", {"records": [call(key, "c1", quantity, at(1, n))
                                                  for n, (key, quantity) in enumerate(sent.items())]}).json()
    answers = {r["id"]: (r["status"], r["code"]) for r in body["results"]}
    accepted = {"plain", "decimal", "exponent", "spaced", "json-float"}
    assert answers == {key: ("accepted", None) if key in accepted else ("rejected", "invalid_quantity") for key in sent}
    stored = dict(UsageRecord.objects.values_list("external_id", "quantity"))
    assert stored == {"plain": 45, "decimal": Decimal("12.5"), "exponent": 1000, "spaced": 7,
                      "json-float": Decimal("2.25")}
    messages = {r["id"]: r["message"] for r in body["results"]}
    assert messages["underscore"] == "'quantity' must be a number."
    assert messages["negative"] == "'quantity' must be >= 0 with at most 6 decimal places."


def test_a_date_that_does_not_exist_rejects_its_record_not_the_call(api, customers):
    """ISO 8601 text of the 13th month or 30 February had failed the whole call (a ValueError)."""
    records = [call("ok-1", "c1", 45, at(1)),
               {**call("month-13", "c1", 45, at(1)), "occurred_at": "2025-13-01T10:00:00-03:00"},
               {**call("feb-30", "c1", 45, at(1)), "occurred_at": "2025-02-30T10:00:00Z"},
               {**call("hour-25", "c1", 45, at(1)), "occurred_at": "2025-12-01T25:00:00Z"},
               call("ok-2", "c1", 45, at(1, 1))]
    response = api.post("/api/v1/usage", {"records": records})
    assert response.status_code == 200, response.content
    answers = [(r["id"], r["status"], r["code"]) for r in response.json()["results"]]
    assert answers == [("ok-1", "accepted", None), ("month-13", "rejected", "invalid_occurred_at"),
                       ("feb-30", "rejected", "invalid_occurred_at"), ("hour-25", "rejected", "invalid_occurred_at"),
                       ("ok-2", "accepted", None)]
    assert response.json()["results"][1]["message"] == (
        "'occurred_at' is not a date and time that exists (month must be in 1..12).")
    assert set(UsageRecord.objects.values_list("external_id", flat=True)) == {"ok-1", "ok-2"}


def test_a_nul_character_rejects_its_record_not_the_call(api, customers):
    """PostgreSQL stores no NUL in text or jsonb: one record with it had failed the whole call (500)."""
    records = [
        call("ok-1", "c1", 45, at(1)),
        {**call("nul-attr", "c1", 45, at(1)), "attributes": {"note": "a\x00b"}},
        {**call("nul-deep", "c1", 45, at(1)), "attributes": {"legs": [{"to": "x"}, {"to": "\x00"}]}},
        {**call("nul-key", "c1", 45, at(1)), "attributes": {"k\x00": "v"}},
        call("nul-dest", "c1", 45, at(1), "3333\x004444"),
        call("nul-customer", "c\x001", 45, at(1)),
        call("ok-2", "c1", 45, at(1, 1)),
    ]
    body = api.post("/api/v1/usage", {"records": records}).json()
    assert [(r["id"], r["status"], r["code"]) for r in body["results"]] == [
        ("ok-1", "accepted", None), ("nul-attr", "rejected", "invalid_attributes"),
        ("nul-deep", "rejected", "invalid_attributes"), ("nul-key", "rejected", "invalid_attributes"),
        ("nul-dest", "rejected", "invalid_destination"), ("nul-customer", "rejected", "invalid_customer"),
        ("ok-2", "accepted", None)]
    assert "NUL" in body["results"][1]["message"]
    assert set(UsageRecord.objects.values_list("external_id", flat=True)) == {"ok-1", "ok-2"}


def test_a_record_priced_beyond_any_summary_is_unrated_and_the_others_fold(tenant, customers):
    """10^16 seconds at R$ 0.10 a minute: a charge no money column holds, which had failed every fold
    of the customer's summary (and an import's whole chunk). Rated by the API and by an import."""
    from tarifa.metering.services.importing import import_usage
    from tarifa.metering.services.ingestion import ingest_usage
    from tarifa.metering.services.reconciliation import find_differences

    huge = "10000000000000000"
    ingest_usage(tenant=tenant, records=[call("api-huge", "c1", huge, at(1)), call("api-ok", "c1", 60, at(1, 1))])
    report = import_usage(tenant=tenant, records=[call("imp-huge", "c1", huge, at(2)), call("imp-ok", "c1", 60, at(2, 1))])
    assert report.counts["accepted"] == 2
    fold_all_pending(batch_size=1000)
    stored = {r.external_id: (r.status, r.unrated_reason) for r in UsageRecord.objects.all()}
    assert stored == {"api-huge": ("unrated", "charge_out_of_range"), "imp-huge": ("unrated", "charge_out_of_range"),
                      "api-ok": ("billed", ""), "imp-ok": ("billed", "")}
    assert find_differences(tenant=tenant) == []


def test_duplicates_count_once_and_conflicts_are_reported(api, customers):
    first = api.post("/api/v1/usage", {"records": [call("r1", "c1", 45, at(1))]}).json()
    assert first["accepted"] == 1
    again = api.post("/api/v1/usage", {"records": [call("r1", "c1", 45, at(1)), call("r1", "c1", 45, at(1))]}).json()
    assert [r["status"] for r in again["results"]] == ["duplicate", "duplicate"]
    changed = api.post("/api/v1/usage", {"records": [call("r1", "c1", 46, at(1))]}).json()
    assert changed["results"][0]["status"] == "conflict" and changed["results"][0]["code"] == "id_conflict"
    in_one_call = api.post("/api/v1/usage", {"records": [call("r9", "c1", 1, at(1)), call("r9", "c1", 2, at(1))]}).json()
    assert [r["status"] for r in in_one_call["results"]] == ["accepted", "conflict"]
    # A stored id sent twice in one call, changed then as stored: each send is compared with the
    # stored record (the changed one is not stored, so the unchanged one is not its conflict).
    mixed = api.post("/api/v1/usage", {"records": [call("r1", "c1", 46, at(1)), call("r1", "c1", 45, at(1))]}).json()
    assert [r["status"] for r in mixed["results"]] == ["conflict", "duplicate"]
    assert UsageRecord.objects.filter(external_id="r1").count() == 1
    assert UsageRecord.objects.get(external_id="r1").quantity == 45


def test_more_than_5000_records_is_refused_whole(api, customers):
    response = api.post("/api/v1/usage", {"records": [call(f"r{i}", "c1", 1, at(1)) for i in range(5001)]})
    assert response.status_code == 422 and response.json()["code"] == "too_many_records"
    assert UsageRecord.objects.count() == 0


def test_rating_picks_rate_by_longest_prefix_and_applies_increments(api, customers):
    api.post("/api/v1/usage", {"records": [
        call("local", "c1", 31, at(1), "33334444"),
        call("mobile", "c1", 31, at(1), "987654321"),
        call("ld", "c1", 31, at(1), "02111223344"),
        call("intl", "c1", 61, at(1), "0021551199"),
        call("tokens", "c1", 1500, at(1), kind="llm.input_tokens"),
    ]})
    rated = {r.external_id: r for r in UsageRecord.objects.all()}
    assert {k: (r.rated_kind, r.billable_quantity) for k, r in rated.items()} == {
        "local": ("call.local", 36), "mobile": ("call.mobile", 36), "ld": ("call.long_distance", 36),
        "intl": ("call.international", 120), "tokens": ("llm.input_tokens", 1500),
    }
    assert rated["mobile"].snapshot.data["prefix"] == "9" and rated["mobile"].snapshot.data["price"] == "0.300000"
    assert rated["mobile"].snapshot_id != rated["local"].snapshot_id
    assert rated["local"].summary_id == rated["mobile"].summary_id  # same customer and month


def test_unrated_records_are_kept_listed_and_rerated_after_a_fix(api, tenant, customers):
    from tarifa.tenants.services import create_customer

    body = api.post("/api/v1/usage", {"records": [
        call("u1", "nobody", 30, at(1)),
        call("u2", "c1", 30, at(1), kind="sms"),
        call("u3", "c1", 30, at(1), kind="llm.output_tokens"),
    ]}).json()
    assert body["accepted"] == 3  # stored, not lost, though not priceable yet
    reasons = dict(UsageRecord.objects.values_list("external_id", "unrated_reason"))
    assert reasons == {"u1": "unknown_customer", "u2": "no_rate_for_kind", "u3": "no_rate_for_kind"}
    listed = api.get("/api/v1/usage", status="unrated").json()["items"]
    assert {r["id"] for r in listed} == {"u1", "u2", "u3"}
    typo = api.get("/api/v1/usage", status="unratd")  # had listed nothing, as if none were unrated
    assert typo.status_code == 422 and typo.json()["field"] == "status"
    create_customer(tenant=tenant, external_id="nobody")
    assert api.post("/api/v1/usage/rerate-unrated?reason=no_rate_for_kind").json() == {"rated": 0, "unrated": 2}
    typo = api.post("/api/v1/usage/rerate-unrated?reason=no_rate_for_knd")  # had re-rated nothing, silently
    assert typo.status_code == 422 and typo.json()["field"] == "reason"
    assert api.post("/api/v1/usage/rerate-unrated").json() == {"rated": 0, "unrated": 3}  # no plan yet for "nobody"
    assert UsageRecord.objects.get(external_id="u1").unrated_reason == "no_plan"
    api.post("/api/v1/customers/nobody/subscriptions", {"plan": "tel", "starts_on": "2025-01-01"})
    assert api.post("/api/v1/usage/rerate-unrated").json() == {"rated": 1, "unrated": 2}
    assert UsageRecord.objects.get(external_id="u1").status == "rated"


def test_rating_twice_gives_the_same_result(tenant, customers):
    from tarifa.metering.pricing import Rater

    args = dict(customer_ref="c1", kind="call", quantity=__import__("decimal").Decimal(47), occurred_at=at(3),
                destination="987654321")
    assert Rater(tenant).rate(**args) == Rater(tenant).rate(**args)


def test_plan_change_takes_effect_from_its_date(api, tenant, customers, plan):
    from tarifa.metering.services.plans import create_plan

    create_plan(tenant=tenant, code="cheap", name="Cheap", rates=[{"kind": "call.local", "price": "0.01",
                                                                     "unit": "second", "block_size": "60"}])
    api.post("/api/v1/customers/c1/subscriptions", {"plan": "cheap", "starts_on": "2025-12-15"})
    api.post("/api/v1/usage", {"records": [call("before", "c1", 60, at(14)), call("after", "c1", 60, at(15))]})
    plans = dict(UsageRecord.objects.values_list("external_id", "snapshot__data__plan"))
    assert plans == {"before": "tel", "after": "cheap"}


def test_a_plan_change_dated_back_over_rated_usage_names_the_periods_to_rerate(api, tenant, customers, plan):
    """Usage already rated from the new plan's first day keeps its plan until re-rated: the answer
    says which periods hold it (in the tenant's days: 01:30 UTC on the 15th is still the 14th in
    São Paulo), and a re-rate of them clears it."""
    from tarifa.metering.services.plans import create_plan
    from tarifa.metering.services.reconciliation import rerate_period

    create_plan(tenant=tenant, code="cheap", name="Cheap", rates=[{"kind": "call.local", "price": "0.01",
                                                                     "unit": "second", "block_size": "60"}])
    api.post("/api/v1/usage", {"records": [
        call("dec-14", "c1", 60, at(14)) | {"occurred_at": "2025-12-15T01:30:00Z"},
        call("dec-20", "c1", 60, at(20)), call("jan-5", "c1", 60, at(5) + timedelta(days=31))]})
    fold_all_pending(batch_size=1000)
    answer = api.post("/api/v1/customers/c1/subscriptions", {"plan": "cheap", "starts_on": "2025-12-15"}).json()
    assert answer == {"plan": "cheap", "starts_on": "2025-12-15", "rerate_periods": ["2025-12", "2026-01"]}
    later = api.post("/api/v1/customers/c1/subscriptions", {"plan": "tel", "starts_on": "2026-01-01"}).json()
    assert later["rerate_periods"] == []  # January was rated under tel: nothing to change
    rerate_period(tenant=tenant, period="2025-12")
    again = api.post("/api/v1/customers/c1/subscriptions", {"plan": "cheap", "starts_on": "2025-12-15"}).json()
    assert again["rerate_periods"] == []
    plans = dict(UsageRecord.objects.values_list("external_id", "snapshot__data__plan"))
    assert plans == {"dec-14": "tel", "dec-20": "cheap", "jan-5": "tel"}


def test_period_is_the_month_in_the_tenant_timezone(api, customers):
    # 2026-01-01 01:30 UTC is still 31 December in São Paulo (UTC-3).
    api.post("/api/v1/usage", {"records": [call("edge", "c1", 60, at(1)) | {"occurred_at": "2026-01-01T01:30:00Z"}]})
    assert UsageRecord.objects.get().period == "2025-12"


def test_usage_list_filters_paginates_and_is_tenant_scoped(api, make_api, customers):
    api.post("/api/v1/usage", {"records": [call(f"r{i}", "c1" if i % 2 else "c2", 30, at(1, i)) for i in range(9)]})
    page = api.get("/api/v1/usage", customer="c1", limit=2).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    ids, cursor = [], None
    while True:
        page = api.get("/api/v1/usage", customer="c1", limit=2, **({"cursor": cursor} if cursor else {})).json()
        ids += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert ids == ["r1", "r3", "r5", "r7"]
    assert api.get("/api/v1/usage", period="2025-13").json()["code"] == "invalid_period"
    _, other = make_api("Other")
    assert other.get("/api/v1/usage").json()["items"] == []
    assert other.post("/api/v1/usage", {"records": [call("r1", "c1", 30, at(1))]}).json()["accepted"] == 1


def test_a_record_dated_outside_2000_to_a_day_ahead_is_rejected_alone(api, customers, settings):
    """Dates near the calendar's ends had been a 500 (no UTC date for year 1 at +14:00 on SQLite; a
    period of year 10000 does not fit its column on PostgreSQL) and failed the whole call."""
    from datetime import datetime, timedelta, timezone

    settings.TARIFA_USAGE_FUTURE_HOURS = 2
    now = datetime.now(timezone.utc)
    dated = [("year-1", "0001-01-01T00:00:00+14:00"), ("year-9999", "9999-12-31T23:59:59-12:00"),
             ("1999", "1999-12-31T23:59:59+00:00"), ("2000", "2000-01-01T01:00:00+01:00"),
             ("soon", (now + timedelta(hours=1)).isoformat()), ("later", (now + timedelta(hours=3)).isoformat())]
    records = [{**call(record_id, "c1", 45, at(1)), "occurred_at": when} for record_id, when in dated]
    body = api.post("/api/v1/usage", {"records": [*records, call("ok", "c1", 45, at(1))]}).json()
    assert [(r["id"], r["status"], r["code"]) for r in body["results"]] == [
        ("year-1", "rejected", "occurred_at_too_early"), ("year-9999", "rejected", "occurred_at_in_future"),
        ("1999", "rejected", "occurred_at_too_early"), ("2000", "accepted", None), ("soon", "accepted", None),
        ("later", "rejected", "occurred_at_in_future"), ("ok", "accepted", None)]
    assert body["results"][5]["message"] == "'occurred_at' is more than 2 hours ahead of the time it was received."
    # 2000-01-01T00:00Z itself is in; the customer had no plan then.
    assert UsageRecord.objects.get(external_id="2000").unrated_reason == "no_plan"


def test_attributes_beyond_the_size_limit_reject_their_record(api, customers, settings):
    """Measured as the compact JSON stored, in UTF-8 bytes ("é" takes two)."""
    settings.TARIFA_USAGE_ATTRIBUTES_MAX_BYTES = 30
    fits = {"note": "x" * 19}  # {"note":"xxx…"} is 30 bytes
    records = [{**call("fits", "c1", 45, at(1)), "attributes": fits},
               {**call("one-over", "c1", 45, at(1)), "attributes": {"note": "x" * 20}},
               {**call("accents", "c1", 45, at(1)), "attributes": {"note": "é" * 9 + "x"}},
               {**call("accents-over", "c1", 45, at(1)), "attributes": {"note": "é" * 10}}]
    body = api.post("/api/v1/usage", {"records": records}).json()
    assert [(r["id"], r["status"], r["code"]) for r in body["results"]] == [
        ("fits", "accepted", None), ("one-over", "rejected", "attributes_too_large"),
        ("accents", "accepted", None), ("accents-over", "rejected", "attributes_too_large")]
    assert body["results"][1]["message"] == "'attributes' takes 31 bytes as JSON; at most 30 are kept."
    assert UsageRecord.objects.get(external_id="fits").attributes == fits


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
# Dates and times in the ISO 8601 shapes the parser reads, valid or not (month 13, hour 25, 30 Feb).
ISO_TIMES = st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
                          r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)?\Z")
ANY_VALUE = {
    "id": st.text(max_size=10) | JSON_VALUES, "customer": JSON_VALUES, "kind": JSON_VALUES,
    "occurred_at": st.text(max_size=40) | JSON_VALUES,
    "quantity": st.from_regex(r"\A[+-]?[0-9.eE_+-]{1,30}\Z") | st.integers(-10**30, 10**30) | JSON_VALUES,
    "destination": JSON_VALUES, "attributes": JSON_VALUES}


@st.composite
def records(draw) -> dict:
    """A valid record with up to three of its values replaced by anything JSON holds, so that the
    checks after the first one are reached too."""
    record = {"id": draw(st.from_regex(r"\A[a-z0-9.-]{1,12}\Z")), "customer": "c1", "kind": "call",
              "quantity": draw(st.integers(0, 10**6)), "occurred_at": draw(ISO_TIMES)}
    for key in draw(st.sets(st.sampled_from(sorted(ANY_VALUE)), max_size=3)):
        record[key] = draw(ANY_VALUE[key])
    return record


@settings(max_examples=300, deadline=None)
@given(record=records() | JSON_VALUES)
def test_any_json_record_is_accepted_or_rejected_with_a_code(record):
    """Whatever a client sends as a record is answered: a checked record or a rejection with a
    code, never an exception that fails the other records of its call (a date that does not exist
    had been one). Checked without a database: the check runs before anything is stored."""
    from tarifa.metering.services.ingestion import _Rejected, clean_record

    try:
        clean = clean_record(record, with_hash=False)
    except _Rejected as rejected:
        assert rejected.code and rejected.message
    else:
        assert clean.id == record["id"] and clean.quantity >= 0 and clean.occurred_at.tzinfo is not None
