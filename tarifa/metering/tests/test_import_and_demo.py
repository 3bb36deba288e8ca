from __future__ import annotations

import json
import sys
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tarifa.metering.models import Summary, UsageRecord

pytestmark = pytest.mark.django_db

ROW = ('"c1","1133334444","{dst}","from-internal","""c1"" <1000>","SIP/c1-1","SIP/t-1","Dial","SIP/t/{dst}",'
       '"2025-12-01 09:{minute:02d}:00","2025-12-01 09:{minute:02d}:05","2025-12-01 09:{minute:02d}:50","50","{billsec}",'
       '"{disposition}","DOCUMENTATION","{uid}",""')


def answered(uid: str, *, dst: str = "33334444", minute: int = 0, billsec: int = 45) -> str:
    """A Master.csv line of an answered call (uid "{uid}" leaves a placeholder to fill later)."""
    return ROW.format(dst=dst, minute=minute, billsec=billsec, disposition="ANSWERED", uid=uid)


def import_file(*args) -> int:
    """`tarifa usage import` through call_command; its exit code (1: some lines not imported)."""
    try:
        call_command("usage", "import", *map(str, args), "--no-progress")
    except SystemExit as exit_:
        return exit_.code
    return 0


def _master_csv(tmp_path, rows):
    path = tmp_path / "Master.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_asterisk_import_bills_answered_calls_only(tenant, customers, tmp_path, capsys):
    path = _master_csv(tmp_path, [
        answered("1700000000.1"),
        ROW.format(dst="987654321", minute=1, billsec=0, disposition="NO ANSWER", uid="1700000000.2"),
        answered("1700000000.3", dst="987654321", minute=2, billsec=31),
        '"broken","line"',
        ROW.format(dst="33334444", minute=3, billsec=20, disposition="BUSY", uid="1700000000.4"),
    ])
    switch_interval = sys.getswitchinterval()
    assert import_file(path, "--tenant", tenant.slug, "--format", "asterisk-csv") == 1  # the broken line
    assert sys.getswitchinterval() == switch_interval  # shortened for the import only
    out, err = capsys.readouterr()
    assert "accepted=2" in out and "rejected=1" in out and "skipped(not billable)=2" in out
    assert "line-4: unreadable_line expected 18 columns, found 2" in out
    assert err.strip() == ("import: 1 rejected and 0 conflicting record(s) not imported (listed above, up to 20); "
                           "the rest is stored")
    records = {r.external_id: r for r in UsageRecord.objects.all()}
    assert set(records) == {"1700000000.1", "1700000000.3"}
    assert records["1700000000.3"].rated_kind == "call.mobile" and records["1700000000.3"].quantity == 31
    # Asterisk writes local time: 09:00 in São Paulo is 12:00 UTC.
    assert records["1700000000.1"].occurred_at.isoformat() == "2025-12-01T12:00:00+00:00"
    # Importing the same file again counts nothing twice.
    assert import_file(path, "--tenant", tenant.slug, "--format", "asterisk-csv") == 1
    assert "accepted=0 duplicate=2" in capsys.readouterr().out
    # Without the broken line, a re-import is all duplicates: a success.
    path.write_text("\n".join(path.read_text().splitlines()[:3]) + "\n")
    assert import_file(path, "--tenant", tenant.slug, "--format", "asterisk-csv") == 0
    out, err = capsys.readouterr()
    assert "accepted=0 duplicate=2 conflict=0 rejected=0 skipped(not billable)=1" in out and err == ""
    # A changed record under a stored id is a conflict: not imported, and the exit code says so.
    path.write_text(answered("1700000000.1", billsec=46) + "\n")
    assert import_file(path, "--tenant", tenant.slug, "--format", "asterisk-csv") == 1
    out, err = capsys.readouterr()
    assert "conflict=1" in out and "1 conflicting record(s)" in err
    assert UsageRecord.objects.get(external_id="1700000000.1").quantity == 45


def test_asterisk_values_that_need_escaping_are_stored_as_read(tenant, customers, tmp_path, capsys):
    """Quotes, backslashes, tabs, line breaks and non-ASCII text reach the stored record as the
    Python reader reads them, and with the content hash the API gives the same record (on
    PostgreSQL the import formats its COPY lines itself)."""
    import csv

    from tarifa.metering.importers import read_asterisk_csv
    from tarifa.metering.services.ingestion import clean_record, ingest_usage

    def cdr(uid, account, dst, billsec, src="1133334444", dcontext="from-internal", channel="SIP/a", userfield=""):
        return [account, src, dst, dcontext, "", channel, "SIP/b", "Dial", "", "2025-12-01 09:00:00",
                "2025-12-01 09:00:05", "2025-12-01 09:01:00", "60", billsec, "ANSWERED", "DOCUMENTATION", uid,
                userfield]

    path = tmp_path / "Master.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([
            cdr("plain.1", "c1", "33334444", "45", userfield="vip"),
            cdr("back\\slash", "c1", "33334444", "30", src='say "hi"\\', dcontext="tab\there",
                channel="line\nbreak", userfield="ação €"),
            cdr("tabbed.3", "c2", "33 33\t4444", "31"),
            cdr("wide.4", "c2", "987654321", "４５"),  # full-width digits: a mangled field, refused
            cdr("nul\x01.5", "c1", "33334444", "10"),  # not a visible-ASCII id: rejected
        ])
    assert import_file(path, "--tenant", tenant.slug, "--format", "asterisk-csv") == 1
    out = capsys.readouterr().out
    assert "accepted=3" in out and "rejected=2" in out and "invalid_id" in out
    assert "wide.4: invalid_quantity 'quantity' must be a number." in out
    stored = {r.external_id: r for r in UsageRecord.objects.all()}
    with path.open(newline="") as stream:
        read = [raw for raw in read_asterisk_csv(stream, tz=tenant.tzinfo) if raw["id"] in stored]
    assert len(read) == 3
    for clean in map(clean_record, read):
        record = stored[clean.id]
        assert (record.customer_ref, record.quantity, record.destination, record.attributes) == (
            clean.customer, clean.quantity, clean.destination, clean.attributes), clean.id
    # The same records sent to the API are the same content: duplicates, not conflicts.
    assert [r.status for r in ingest_usage(tenant=tenant, records=read).results] == ["duplicate"] * 3
    assert stored["back\\slash"].attributes == {"src": 'say "hi"\\', "dcontext": "tab\there", "channel": "line\nbreak",
                                                "duration": "60", "userfield": "ação €"}
    assert stored["tabbed.3"].destination == "33 33\t4444"


def test_a_nul_character_in_a_cdr_rejects_its_line_not_the_import(tenant, customers, tmp_path, capsys):
    """Python's csv module passes NUL through; PostgreSQL's COPY and jsonb take none."""
    path = _master_csv(tmp_path, [
        answered("1700000000.1"),
        answered("1700000000.2", dst="3333\x004444", minute=1),
        answered("1700000000.3", minute=2).replace(
            '"c1"', '"c\x001"', 1),
        answered("1700000000.4", minute=3).replace(
            '"DOCUMENTATION","1700000000.4",""', '"DOCUMENTATION","1700000000.4","vip\x00"'),
        answered("1700000000.5", minute=4),
    ])
    assert import_file(path, "--tenant", tenant.slug, "--format", "asterisk-csv") == 1
    out = capsys.readouterr().out
    assert "accepted=2" in out and "rejected=3" in out
    assert "1700000000.2: invalid_destination" in out and "1700000000.3: invalid_customer" in out
    assert "1700000000.4: invalid_attributes" in out
    assert set(UsageRecord.objects.values_list("external_id", flat=True)) == {"1700000000.1", "1700000000.5"}


def test_csv_and_jsonl_imports(tenant, customers, tmp_path, capsys):
    csv_path = tmp_path / "usage.csv"
    csv_path.write_text("id,customer,kind,quantity,occurred_at,destination,campaign\n"
                        "a,c1,call,60,2025-12-01T10:00:00-03:00,33334444,promo\n"
                        "b,c1,call,x,2025-12-01T10:00:00-03:00,33334444,\n")
    assert import_file(csv_path, "--tenant", tenant.slug, "--format", "csv") == 1
    assert "accepted=1" in capsys.readouterr().out
    assert UsageRecord.objects.get(external_id="a").attributes == {"campaign": "promo"}
    jsonl = tmp_path / "usage.jsonl"
    jsonl.write_text(json.dumps({"id": "j1", "customer": "c2", "kind": "llm.input_tokens", "quantity": 2000,
                                 "occurred_at": "2025-12-03T00:00:00Z"}) + "\n{not json\n")
    assert import_file(jsonl, "--tenant", tenant.slug, "--format", "jsonl") == 1
    out = capsys.readouterr().out
    assert "accepted=1" in out and "rejected=1" in out and "invalid JSON" in out


def test_an_import_reads_the_encoding_named_and_counts_bytes_it_could_not_decode(tenant, customers, tmp_path,
                                                                                 capsys):
    """A Latin-1 Master.csv read as UTF-8 keeps U+FFFD in its attributes: the import says so and
    --encoding reads it right."""
    row = answered("{uid}")
    path = tmp_path / "Master.csv"
    path.write_bytes((row.format(uid="l1")[:-2] + '"São Paulo"\n').encode("latin-1"))
    assert import_file(path, "--tenant", tenant.slug, "--format", "asterisk-csv") == 0
    captured = capsys.readouterr()
    assert "accepted=1" in captured.out
    assert ("import: 1 byte(s) of the file are not utf-8 and were stored as U+FFFD; if the file is in another "
            "encoding, name it with --encoding") in captured.err
    assert UsageRecord.objects.get(external_id="l1").attributes["userfield"] == "S\ufffdo Paulo"

    path.write_bytes((row.format(uid="l2")[:-2] + '"São Paulo"\n').encode("latin-1"))
    assert import_file(path, "--tenant", tenant.slug, "--format", "asterisk-csv", "--encoding", "latin-1") == 0
    captured = capsys.readouterr()
    assert "accepted=1" in captured.out and "U+FFFD" not in captured.err
    assert UsageRecord.objects.get(external_id="l2").attributes["userfield"] == "São Paulo"

    for name, message in [("klingon", "unknown encoding 'klingon'"), ("rot13", "'rot13' is not a text encoding")]:
        with pytest.raises(CommandError, match=f"^unknown_encoding: {message}") as error:
            call_command("usage", "import", str(path), "--tenant", tenant.slug, "--format", "csv", "--encoding", name)
        assert error.value.returncode == 2
    assert UsageRecord.objects.count() == 2


@pytest.mark.parametrize("fmt", ["asterisk-csv", "csv", "jsonl"])
def test_a_utf8_file_with_a_byte_order_mark_imports(tenant, customers, tmp_path, capsys, fmt):
    """Excel saves CSV as UTF-8 with a byte-order mark: it had stuck to the header's first name
    ("the CSV header lacks id"), to the first CDR's account code, or to the first JSON line."""
    row = answered("b1")
    content = {
        "asterisk-csv": row + "\n",
        "csv": "id,customer,kind,quantity,occurred_at,destination\nb1,c1,call,45,2025-12-01T10:00:00Z,33334444\n",
        "jsonl": json.dumps({"id": "b1", "customer": "c1", "kind": "call", "quantity": 45,
                             "occurred_at": "2025-12-01T10:00:00Z", "destination": "33334444"}) + "\n",
    }[fmt]
    path = tmp_path / "usage.txt"
    path.write_bytes(b"\xef\xbb\xbf" + content.encode())
    assert import_file(path, "--tenant", tenant.slug, "--format", fmt) == 0
    assert "accepted=1" in capsys.readouterr().out
    record = UsageRecord.objects.get()
    assert (record.external_id, record.customer_ref, record.unrated_reason) == ("b1", "c1", "")


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_a_csv_with_semicolons_or_tabs_imports(tenant, customers, tmp_path, capsys, delimiter):
    """A spreadsheet in pt-BR saves CSV with semicolons (the comma is its decimal separator): the
    header had been read as one unknown column, and the file refused."""
    path = tmp_path / "usage.csv"
    rows = [["id", "customer", "kind", "quantity", "occurred_at", "destination", "campaign"],
            ["s1", "c1", "call", "45", "2025-12-01T10:00:00Z", "33334444", "a, b"],
            ["s2", "c1", "call", "x", "2025-12-01T10:01:00Z", "33334444", ""],
            ["s3", "c1", "call", "1,5", "2025-12-01T10:02:00Z", "33334444", ""]]
    path.write_text("".join(delimiter.join(row) + "\n" for row in rows))
    assert import_file(path, "--tenant", tenant.slug, "--format", "csv") == 1
    out = capsys.readouterr().out
    assert "accepted=1" in out and "s2: invalid_quantity 'quantity' must be a number." in out
    assert "s3: invalid_quantity 'quantity' must be a number, without commas: a dot separates decimals (1.5)" in out
    assert UsageRecord.objects.get().attributes == {"campaign": "a, b"}


@pytest.mark.parametrize("fmt", ["asterisk-csv", "csv", "jsonl"])
def test_an_overlong_line_is_rejected_without_reading_it_whole(tenant, customers, tmp_path, capsys, fmt):
    """A JSON array exported on one line, or a binary file, had been read into memory whole."""
    from tarifa.metering.importers import MAX_LINE_CHARS

    def record(record_id: str) -> dict:
        return {"id": record_id, "customer": "c1", "kind": "call", "quantity": 45,
                "occurred_at": "2025-12-01T10:00:00Z", "destination": "33334444"}

    def line(record_id: str) -> str:
        if fmt == "asterisk-csv":
            return answered(record_id) + "\n"
        if fmt == "csv":
            return f"{record_id},c1,call,45,2025-12-01T10:00:00Z,33334444\n"
        return json.dumps(record(record_id)) + "\n"

    header = "id,customer,kind,quantity,occurred_at,destination\n" if fmt == "csv" else ""
    overlong = json.dumps([record(f"a{i}") for i in range(MAX_LINE_CHARS // 100)]) + "\n"
    assert len(overlong) > MAX_LINE_CHARS
    path = tmp_path / "usage.txt"
    path.write_text(header + line("o1") + overlong + line("o2"))
    assert import_file(path, "--tenant", tenant.slug, "--format", fmt) == 1
    out = capsys.readouterr().out
    number = 3 if fmt == "csv" else 2
    assert (f"line-{number}: unreadable_line the line is longer than {MAX_LINE_CHARS:,} characters "
            "(one record a line is expected)") in out
    assert "accepted=2" in out and "rejected=1" in out
    assert sorted(UsageRecord.objects.values_list("external_id", flat=True)) == ["o1", "o2"]


@pytest.mark.parametrize("compression", ["gzip", "bz2", "lzma"])
def test_a_compressed_file_is_read_as_it_is_and_a_damaged_one_stops_the_import_with_what_was_kept(
        tenant, customers, tmp_path, capsys, settings, compression):
    """Rotated CDR files are compressed (Master.csv.1.gz): read on the fly, whatever the name."""
    import importlib
    import re

    compress = importlib.import_module(compression).compress
    row = answered("{uid}")
    path = tmp_path / "Master.csv.1"
    path.write_bytes(compress((row.format(uid="g1") + "\n" + row.format(uid="g2") + "\n").encode()))
    assert import_file(path, "--tenant", tenant.slug, "--format", "asterisk-csv") == 0
    assert "accepted=2" in capsys.readouterr().out

    settings.TARIFA_IMPORT_CHUNK_SIZE = 1000  # PostgreSQL's chunks; SQLite's hold 5,000
    lines = "".join(row.format(uid=f"d{n}").replace("09:00:00", f"09:{n // 600 % 60:02d}:{n // 10 % 60:02d}") + "\n"
                    for n in range(12_000))
    whole = compress(lines.encode())
    path.write_bytes(whole[:len(whole) * 3 // 4])
    with pytest.raises(CommandError, match="^unreadable_file: the compressed file is damaged") as error:
        call_command("usage", "import", str(path), "--tenant", tenant.slug, "--format", "asterisk-csv", "--no-progress")
    assert error.value.returncode == 2
    imported = int(re.search(r"the ([\d,]+) records before were imported", str(error.value)).group(1).replace(",", ""))
    assert imported >= 5000
    assert UsageRecord.objects.filter(external_id__startswith="d").count() == imported


def test_a_zip_archive_is_refused_with_what_to_do(tenant, tmp_path):
    """A zip holds files, not one (an .xlsx is one): refused before anything is read."""
    import zipfile

    path = tmp_path / "usage.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("sheet.csv", "id,customer,kind,quantity,occurred_at\n")
    with pytest.raises(CommandError, match="^unreadable_file: the file is a zip archive .*save the sheet as CSV"):
        call_command("usage", "import", str(path), "--tenant", tenant.slug, "--format", "csv", "--no-progress")


def test_asterisk_start_times_are_read_in_the_pbx_time_zone_when_named(tenant, customers, tmp_path, capsys):
    """A PBX in Manaus (UTC-4) for a São Paulo tenant (UTC-3): its 23:30 on 30 November is
    00:30 on 1 December in the tenant's month, not 22:30 on 30 November."""
    from datetime import datetime, timezone as dt_timezone

    def row(uid: str) -> str:
        return answered(uid).replace(
            '"2025-12-01 09:00:00"', '"2025-11-30 23:30:00"', 1)

    assert import_file(_master_csv(tmp_path, [row("manaus")]), "--tenant", tenant.slug, "--format", "asterisk-csv",
                       "--timezone", "America/Manaus") == 0
    assert import_file(_master_csv(tmp_path, [row("local")]), "--tenant", tenant.slug, "--format", "asterisk-csv") == 0
    assert "accepted=1" in capsys.readouterr().out
    manaus, local = UsageRecord.objects.get(external_id="manaus"), UsageRecord.objects.get(external_id="local")
    assert (manaus.occurred_at, manaus.period) == (datetime(2025, 12, 1, 3, 30, tzinfo=dt_timezone.utc), "2025-12")
    assert (local.occurred_at, local.period) == (datetime(2025, 12, 1, 2, 30, tzinfo=dt_timezone.utc), "2025-11")

    path = _master_csv(tmp_path, [row("x")])
    with pytest.raises(CommandError, match="^invalid_timezone: 'Mars/Base' is not an IANA time zone"):
        call_command("usage", "import", str(path), "--tenant", tenant.slug, "--format", "asterisk-csv",
                     "--timezone", "Mars/Base")
    assert UsageRecord.objects.count() == 2


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_csv_and_jsonl_times_without_an_offset_are_read_in_the_named_zone(tenant, customers, tmp_path, capsys, fmt):
    """An ERP's export of local times: refused without --timezone (a guessed zone would misplace
    them by hours), read in the named zone with it; times with an offset keep theirs, and a date
    that does not exist is rejected alone (it had stopped the import)."""
    from datetime import datetime, timezone as dt_timezone

    times = {"local": "2025-11-30T23:30:00", "offset": "2025-11-30T23:30:00Z", "feb-30": "2025-02-30T10:00:00"}

    def write(prefix: str):
        path = tmp_path / f"usage.{fmt}"
        records = [{"id": f"{prefix}{name}", "customer": "c1", "kind": "call", "quantity": "45", "occurred_at": text,
                    "destination": "33334444"} for name, text in times.items()]
        if fmt == "csv":
            path.write_text("id,customer,kind,quantity,occurred_at,destination\n"
                            + "".join(",".join(r.values()) + "\n" for r in records))
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return path

    assert import_file(write("a-"), "--tenant", tenant.slug, "--format", fmt) == 1
    out, err = capsys.readouterr()
    assert "accepted=1" in out and "rejected=2" in out
    assert "a-local: invalid_occurred_at 'occurred_at' needs a UTC offset" in out
    assert ("import: some times have no UTC offset; if the file's times are local, name their zone with "
            "--timezone") in err
    assert "a-feb-30: invalid_occurred_at 'occurred_at' is not a date and time that exists" in out

    assert import_file(write("b-"), "--tenant", tenant.slug, "--format", fmt, "--timezone", "America/Manaus") == 1
    out, err = capsys.readouterr()
    assert "name their zone" not in err
    assert "accepted=2" in out and "rejected=1" in out and "b-feb-30: invalid_occurred_at" in out
    stored = {r.external_id: (r.occurred_at, r.period) for r in UsageRecord.objects.all()}
    assert stored == {
        "a-offset": (datetime(2025, 11, 30, 23, 30, tzinfo=dt_timezone.utc), "2025-11"),
        "b-offset": (datetime(2025, 11, 30, 23, 30, tzinfo=dt_timezone.utc), "2025-11"),
        # 23:30 in Manaus (UTC-4) is 00:30 on 1 December in the tenant's São Paulo: December's usage
        "b-local": (datetime(2025, 12, 1, 3, 30, tzinfo=dt_timezone.utc), "2025-12")}


def test_import_errors_are_one_line(tenant, tmp_path):
    with pytest.raises(CommandError, match="^file_not_found: no such file"):
        call_command("usage", "import", str(tmp_path / "missing.csv"), "--tenant", tenant.slug, "--format", "csv")
    with pytest.raises(CommandError, match="^not_a_file: .* is a directory or a device, not a file to import$"):
        call_command("usage", "import", str(tmp_path), "--tenant", tenant.slug, "--format", "csv")
    with pytest.raises(CommandError, match="^tenant_not_found: No tenant 'nope'.$") as error:
        call_command("usage", "import", str(tmp_path / "x"), "--tenant", "nope", "--format", "csv")
    assert error.value.returncode == 2  # usage errors exit 2, like argparse's; 1 is a command's finding
    bad = tmp_path / "bad.csv"
    bad.write_text("who,what\n1,2\n")
    with pytest.raises(CommandError, match="^unreadable_file: .*lacks id, customer, kind, quantity, occurred_at"):
        call_command("usage", "import", str(bad), "--tenant", tenant.slug, "--format", "csv", "--no-progress")


def test_import_memory_does_not_grow_with_the_file(tenant, customers, tmp_path):
    import tracemalloc

    from tarifa.metering.importers import read_asterisk_csv
    from tarifa.metering.services.importing import import_usage

    def peak(rows: int) -> int:
        path = _master_csv(tmp_path, [answered(f"{rows}.{i}", minute=i % 60, billsec=30) for i in range(rows)])
        tracemalloc.start()
        with path.open(newline="") as stream:
            import_usage(tenant=tenant, records=read_asterisk_csv(stream, tz=tenant.tzinfo), chunk_size=500)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(1000), peak(8000)
    assert large < small * 2, (small, large)  # streamed in chunks: 8× the rows, not 8× the memory


def test_unrated_listing_and_retry_from_the_cli(tenant, customers, capsys):
    from tarifa.metering.services.ingestion import ingest_usage
    from tarifa.metering.tests.conftest import at, call

    ingest_usage(tenant=tenant, records=[call("u1", "ghost", 30, at(1))])
    call_command("usage", "unrated", "--tenant", tenant.slug)
    out = capsys.readouterr().out
    assert "u1" in out and "unknown_customer" in out and "1 unrated record(s)" in out
    from tarifa.metering.services.plans import subscribe
    from tarifa.tenants.services import create_customer

    ghost, _ = create_customer(tenant=tenant, external_id="ghost")
    subscribe(customer=ghost, plan=customers[0].subscriptions.get().plan, starts_on=at(1).date().replace(day=1))
    call_command("usage", "unrated", "--tenant", tenant.slug, "--retry")
    assert "now rated=1" in capsys.readouterr().out


def test_demo_builds_a_tenant_with_summaries(capsys, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    call_command("demo", "--calls", "400")
    out = capsys.readouterr().out
    assert "API key (shown once): trf_" in out and "acct-1003" in out and "allowance minutos-nacionais" in out
    assert (tmp_path / "demo" / "Master.csv").exists()
    assert Summary.objects.filter(tenant__slug="demo-telecom").count() == 4
    assert UsageRecord.objects.filter(status="rated").count() == 0  # everything folded
    assert sum(s.total_amount for s in Summary.objects.all()) > Decimal(0)
    call_command("demo", "--if-empty")
    assert capsys.readouterr().out == ""  # not twice
    from tarifa.metering.services.reconciliation import find_differences

    assert find_differences() == []


@pytest.mark.parametrize("fmt", ["asterisk-csv", "jsonl"])
def test_an_import_rejects_records_dated_outside_its_window_and_stores_the_rest(tenant, customers, tmp_path, capsys,
                                                                                fmt):
    """Asterisk writes wall-clock time, compared with the window in the tenant's zone (São Paulo:
    2000-01-01T00:00Z is 1999-12-31 22:00 there); a start of year 9999 had failed its whole chunk."""
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    tomorrow = (datetime.now(ZoneInfo("America/Sao_Paulo")) + timedelta(hours=25)).strftime("%Y-%m-%d %H:%M:%S")
    starts = {"u.1": "9999-12-31 23:59:59", "u.2": "0001-01-01 00:00:00", "u.3": "1999-12-31 21:59:59",
              "u.4": "1999-12-31 22:00:00", "u.5": tomorrow, "u.6": "2025-12-01 09:00:00"}
    if fmt == "asterisk-csv":
        rows = [answered(uid).replace(
            "2025-12-01 09:00:00", start) for uid, start in starts.items()]
        path = _master_csv(tmp_path, rows)
    else:
        path = tmp_path / "usage.jsonl"
        path.write_text("".join(json.dumps({"id": uid, "customer": "c1", "kind": "call", "quantity": 45,
                                            "occurred_at": datetime.fromisoformat(start).replace(
                                                tzinfo=ZoneInfo("America/Sao_Paulo")).isoformat()}) + "\n"
                                for uid, start in starts.items()))
    assert import_file(path, "--tenant", tenant.slug, "--format", fmt) == 1
    out = capsys.readouterr().out
    assert "accepted=2" in out and "rejected=4" in out
    for uid, code in [("u.1", "occurred_at_in_future"), ("u.2", "occurred_at_too_early"),
                      ("u.3", "occurred_at_too_early"), ("u.5", "occurred_at_in_future")]:
        assert f"{uid}: {code}" in out
    assert set(UsageRecord.objects.values_list("external_id", flat=True)) == {"u.4", "u.6"}


def test_an_import_rejects_attributes_jsonb_cannot_hold_or_too_large(tenant, customers, tmp_path, capsys, settings):
    """NaN and Infinity are JSON to Python's reader, not to PostgreSQL's jsonb (they had failed the
    whole chunk); a CDR's kept values (userfield here) count towards the attributes' limit."""
    settings.TARIFA_USAGE_ATTRIBUTES_MAX_BYTES = 200
    path = tmp_path / "usage.jsonl"
    lines = ['{"id": "nan", "customer": "c1", "kind": "call", "quantity": 45, "occurred_at": "2025-12-01T10:00:00Z",'
             ' "attributes": {"score": NaN}}',
             '{"id": "inf", "customer": "c1", "kind": "call", "quantity": 45, "occurred_at": "2025-12-01T10:00:00Z",'
             ' "attributes": {"score": 1e400}}',
             '{"id": "ok", "customer": "c1", "kind": "call", "quantity": 45, "occurred_at": "2025-12-01T10:00:00Z",'
             ' "attributes": {"score": 1.5}}']
    path.write_text("\n".join(lines) + "\n")
    assert import_file(path, "--tenant", tenant.slug, "--format", "jsonl") == 1
    out = capsys.readouterr().out
    assert "nan: invalid_attributes 'attributes' must not hold NaN or Infinity." in out
    assert "inf: invalid_attributes" in out and "accepted=1" in out
    assert UsageRecord.objects.get(external_id="ok").attributes == {"score": 1.5}

    row = answered("{uid}")
    master = _master_csv(tmp_path, [row.format(uid="short")[:-2] + '"short note"',
                                    row.format(uid="long")[:-2] + '"' + "n" * 150 + '"'])
    assert import_file(master, "--tenant", tenant.slug, "--format", "asterisk-csv") == 1
    out = capsys.readouterr().out
    assert "long: attributes_too_large" in out and "accepted=1" in out
    assert UsageRecord.objects.get(external_id="short").attributes["userfield"] == "short note"


def test_an_import_whose_usage_overflows_a_summary_stores_it_for_the_fold_to_set_aside(tenant, customers, tmp_path,
                                                                                      capsys):
    """On PostgreSQL an import folds as it stores: a summary that could not hold a chunk's records
    had failed the chunk and stopped the import. The chunk is stored unfolded instead."""
    from tarifa.metering.services.folding import fold_all_pending

    path = tmp_path / "usage.jsonl"
    lines = [{"id": f"t{i}", "customer": "c1", "kind": "llm.input_tokens", "quantity": "99999999999999999",
              "occurred_at": f"2025-12-01T10:{i:02d}:00Z"} for i in range(12)]
    lines += [{"id": f"ok{i}", "customer": "c2", "kind": "call", "quantity": 45, "destination": "33334444",
               "occurred_at": f"2025-12-02T10:{i:02d}:00Z"} for i in range(3)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert import_file(path, "--tenant", tenant.slug, "--format", "jsonl") == 0
    assert "accepted=15" in capsys.readouterr().out
    fold_all_pending(batch_size=1000)
    assert set(UsageRecord.objects.values_list("customer_ref", "status", "unrated_reason")) == {
        ("c1", "unrated", "summary_out_of_range"), ("c2", "billed", "")}
    assert Summary.objects.get(customer__external_id="c2").record_count == 3
    call_command("usage", "unrated", "--tenant", tenant.slug, "--reason", "summary_out_of_range")
    assert "12 unrated record(s)" in capsys.readouterr().out


def test_a_jsonl_line_with_half_a_character_is_rejected_alone(tenant, customers, tmp_path, capsys):
    """An unpaired \\ud800 escape decodes to text PostgreSQL cannot store: it had failed the chunk."""
    path = tmp_path / "usage.jsonl"
    line = '{{"id": "{id}", "customer": "c1", "kind": "call", "quantity": 45, "occurred_at": "2025-12-01T10:00:00Z", ' \
           '"destination": "33334444", "attributes": {{"note": "{note}"}}}}\n'
    path.write_text(line.format(id="half", note="a\\ud800") + line.format(id="whole", note="\\ud83d\\ude00"))
    assert import_file(path, "--tenant", tenant.slug, "--format", "jsonl") == 1
    out = capsys.readouterr().out
    assert "line-1: unreadable_line the line holds half a character" in out and "accepted=1" in out
    assert UsageRecord.objects.get().attributes == {"note": "\U0001F600"}


def test_jsonl_lines_that_are_not_objects_are_rejected_and_an_error_key_is_just_an_attribute(tenant, customers,
                                                                                           tmp_path, capsys):
    """A line holding a number had ended the import with a TypeError; a record whose object held
    an `_error` key was reported as an unreadable line instead of being checked as a record."""
    path = tmp_path / "usage.jsonl"
    record = {"id": "e1", "customer": "c1", "kind": "call", "quantity": 45, "occurred_at": "2025-12-01T10:00:00Z",
              "destination": "33334444", "_error": "from the client's side"}
    path.write_text('5\n[1, 2]\n"text"\nnull\n' + json.dumps(record) + "\n")
    assert import_file(path, "--tenant", tenant.slug, "--format", "jsonl") == 1
    out = capsys.readouterr().out
    assert "line-1: unreadable_line expected a JSON object, found a number" in out
    assert "line-2: unreadable_line expected a JSON object, found an array" in out
    assert "line-3: unreadable_line expected a JSON object, found a string" in out
    assert "line-4: unreadable_line expected a JSON object, found null" in out
    assert "accepted=1" in out and "rejected=4" in out
    assert UsageRecord.objects.get().external_id == "e1"


@pytest.mark.parametrize("fmt", ["asterisk-csv", "csv"])
def test_a_field_beyond_csv_limits_rejects_its_line_and_the_import_goes_on(tenant, customers, tmp_path, capsys, fmt):
    """Python's csv refuses a field of more than 128 KiB (a stray quote makes one of the lines
    after it): it had ended the import with a traceback."""
    huge = "x" * 200_000
    if fmt == "asterisk-csv":
        row = answered("{uid}")
        path = _master_csv(tmp_path, [row.format(uid="u1")[:-2] + f'"{huge}"', row.format(uid="u2")])
    else:
        path = tmp_path / "usage.csv"
        path.write_text("id,customer,kind,quantity,occurred_at,destination,note\n"
                        f"u1,c1,call,45,2025-12-01T10:00:00Z,33334444,{huge}\n"
                        "u2,c1,call,45,2025-12-01T10:01:00Z,33334444,ok\n")
    assert import_file(path, "--tenant", tenant.slug, "--format", fmt) == 1
    out = capsys.readouterr().out
    line = 1 if fmt == "asterisk-csv" else 2
    assert f"line-{line}: unreadable_line unreadable CSV: field larger than field limit (131072)" in out
    assert "accepted=1" in out and list(UsageRecord.objects.values_list("external_id", flat=True)) == ["u2"]
