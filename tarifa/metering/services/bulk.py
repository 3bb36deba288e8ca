"""Set-based ingestion on PostgreSQL: COPY records into a staging table, then deduplicate, rate,
store — and, for imports and API calls, fold — them with a handful of SQL statements per chunk
(an API call's records are a chunk).

It applies the rules of the Python path (`pricing.Rater`, `folding.apply_records`), which SQLite
uses and which stays the reference; `tests/test_bulk.py` runs both on the same random records and
requires the same ratings, charges and summaries. Per record Python only parses and validates;
what made ingestion slow was rating and storing record by record.

A chunk, in one transaction:
1. `usage_work` gets every staged record with its content hash, period, outcome (new, duplicate
   or conflict, against stored records and earlier lines of the chunk) and rating: customer, the
   plan on that local day, the longest-prefix rate (`bulk_rates`, built from the tenant's plans).
2. Summaries of rated records are created where missing.
3. With `fold`, the chunk's records of a summary are charged here when none of them needs a
   wallet or graduated tiers and no earlier record of that summary is still waiting: the summaries
   are locked (FOR NO KEY UPDATE, id order, as the fold workers lock them), the allowance is taken
   in time order by a running sum (each record's share of it, `prior`, is summed while rating),
   and each charge is rounded once.
4. The new records are inserted, those charged in step 3 as billed with the chunk's batch id,
   and the lines, allowance use and totals of their summaries are added in the same transaction.
   Everything else is stored `rated` and folded by the workers as usual. Step 1 found the ids
   unstored, so a unique violation means a concurrent call stored one of them first: the chunk
   is then redone from a savepoint so nobody's allowance is misspent.
"""

from __future__ import annotations

import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable

from django.db import connection, transaction

from tarifa.core.errors import LOCK_NOT_AVAILABLE, sqlstate
from tarifa.core.pgarrays import array_literal
from tarifa.metering.models import (
    Allowance, AllowanceUsage, FoldBatch, PendingSummary, PricePlan, Rate, Summary, SummaryLine, UsageRecord,
)
from tarifa.metering.pricing import max_price, snapshot_ids_for, snapshot_of
from tarifa.metering.rating import MAX_RECORD_CHARGE
from tarifa.metering.selectors import allowances_by_plan, covering_allowance
from tarifa.ops.metrics import USAGE_FOLDED, count_on_commit
from tarifa.tenants.models import Customer, Tenant

ZERO = Decimal(0)
STAGE_COLUMNS = ("seq", "external_id", "customer_ref", "kind", "quantity", "occurred_at", "occurred_local",
                 "destination", "attributes")
USAGE = UsageRecord._meta.db_table
SUMMARY = Summary._meta.db_table
LINE = SummaryLine._meta.db_table
ALLOWANCE_USAGE = AllowanceUsage._meta.db_table
CUSTOMER = Customer._meta.db_table
SUBSCRIPTION = "metering_subscription"


@dataclass
class ChunkResult:
    outcomes: dict[int, str] = field(default_factory=dict)  # seq -> duplicate | conflict (new ones omitted)
    counts: Counter = field(default_factory=Counter)  # accepted / duplicate / conflict
    folded: int = 0
    charged: Decimal = ZERO
    pending_summaries: set[int] = field(default_factory=set)
    conflict_ids: list[str] = field(default_factory=list)  # the first few, to show


def _nothing() -> None:
    pass


class _LostRace(Exception):
    """A concurrent call stored some of this chunk's ids between our check and our insert."""


# Rows that a fold charged, as allowance_moves and add_to_summaries read them: an import chunk's
# (usage_billed, filled by _insert) and a worker's fold batch's (set_folding's fold_charged,
# filled by charge_rows, whose `seq` and `tid` find the usage row to mark billed).
BILLED_ROWS = """seq bigint, tid tid, summary_id bigint, rated_kind text, unit text, allowance_id bigint,
    included numeric, quantity numeric, billable numeric, covered numeric, charged numeric"""


def create_stage() -> None:
    """Create this session's staging tables where missing, and empty the ones a chunk fills.

    Call it inside the chunk's transaction: those tables are emptied at commit (ON COMMIT
    DELETE ROWS truncates the files in place, where a TRUNCATE per request created new ones:
    8 ms of each API call), and deleting here clears them only when an earlier chunk of the
    same transaction used them. The rate tables (`bulk_rates`…) outlive transactions."""
    with connection.cursor() as cursor:
        cursor.execute(f"""
            CREATE TEMP TABLE IF NOT EXISTS usage_stage (
                seq integer, external_id text, customer_ref text, kind text, quantity numeric,
                occurred_at timestamptz, occurred_local timestamp, destination text, attributes jsonb)
                ON COMMIT DELETE ROWS;
            CREATE TEMP TABLE IF NOT EXISTS usage_work (
                seq integer, external_id text, customer_ref text, kind text, quantity numeric,
                occurred_at timestamptz, destination text, attributes jsonb, period text, outcome text, status text,
                unrated_reason text, customer_id bigint, prepaid boolean,
                plan_id bigint, rate_id bigint, rated_kind text, unit text, billable numeric, snapshot_id bigint,
                currency text, price numeric, block_size numeric, places integer, rounding text, tiered boolean,
                allowance_id bigint, included numeric, summary_id bigint, prior numeric) ON COMMIT DELETE ROWS;
            -- what a chunk folded in place adds to its summaries (add_to_summaries reads it)
            CREATE TEMP TABLE IF NOT EXISTS usage_billed ({BILLED_ROWS}) ON COMMIT DELETE ROWS;
            CREATE TEMP TABLE IF NOT EXISTS bulk_rates (
                plan_id bigint, lookup_kind text, prefix text, rate_id bigint, rated_kind text, unit text,
                price numeric, block_size numeric, minimum numeric, increment numeric, places integer,
                rounding text, tiered boolean, currency text, snapshot_id bigint, walked boolean, max_price numeric);
            -- the rates of a (plan, kind looked up) that has few are walked longest prefix first
            CREATE INDEX IF NOT EXISTS bulk_rates_longest ON bulk_rates (plan_id, lookup_kind, length(prefix) DESC)
                WHERE walked;
            -- the others are probed at the lengths the key's prefixes may have (bulk_rate_lengths)
            CREATE INDEX IF NOT EXISTS bulk_rates_prefix ON bulk_rates (plan_id, lookup_kind, prefix) WHERE NOT walked;
            -- per probed (plan, kind) and first character of a key, the lengths of the prefixes that
            -- may match it, longest first (0 for the empty prefix); head '' for any other key
            CREATE TEMP TABLE IF NOT EXISTS bulk_rate_lengths (
                plan_id bigint, lookup_kind text, head text, lengths integer[]);
            CREATE INDEX IF NOT EXISTS bulk_rate_lengths_key ON bulk_rate_lengths (plan_id, lookup_kind, head);
            CREATE TEMP TABLE IF NOT EXISTS bulk_allowances (
                plan_id bigint, rated_kind text, allowance_id bigint, included numeric);
            CREATE TEMP TABLE IF NOT EXISTS bulk_rates_key (digest text, probed boolean);
            DELETE FROM usage_stage; DELETE FROM usage_work; DELETE FROM usage_billed""")


def copy_rows(rows) -> None:
    """COPY (seq, external_id, customer_ref, kind, quantity, occurred_at, occurred_local, destination,
    attributes as JSON text) tuples into the stage."""
    with connection.cursor() as wrapper:
        with wrapper.cursor.copy(f"COPY usage_stage ({', '.join(STAGE_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def copy_text(chunks) -> None:
    """COPY lines of text format (copy_line, in STAGE_COLUMNS order, attributes as JSON) into the stage."""
    with connection.cursor() as wrapper:
        with wrapper.cursor.copy(f"COPY usage_stage ({', '.join(STAGE_COLUMNS)}) FROM STDIN") as copy:
            for chunk in chunks:
                copy.write(chunk)


# What COPY's text format escapes in a value (its delimiter, line ends and escape character).
COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
# The same and NUL, which no COPY line can hold: a value without any goes into a line as it is.
COPY_SPECIAL_OR_NUL = re.compile(r"[\\\t\n\r\x00]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_line(values) -> str:
    """One line of COPY text format, without its newline: None is NULL."""
    return "\t".join("\\N" if value is None else value.translate(_COPY_ESCAPES) if COPY_SPECIAL.search(value)
                     else value for value in values)


def load_rate_tables(*, tenant: Tenant, before_writing: Callable[[], None] = _nothing) -> bool:
    """Fill `bulk_rates` with every (plan, kind looked up, destination prefix) the Python rater
    would match — the exact kinds, and for a family ("call") its members' prefixes, the first
    member in name order winning a prefix — and `bulk_allowances` with the allowance that covers
    each (plan, rated kind). Kept while the tenant's plans, rates and allowances are unchanged
    (`bulk_rates_key` holds their digest; being a temp table too, it rolls back with them).
    `before_writing` runs before rate snapshots are stored (see store_stage's `wait_turn`).
    Returns whether some (plan, kind) is probed rather than walked (see WALKED_RATES)."""
    with connection.cursor() as wrapper:
        # The terms' digest and, if the tables were built for it, their `probed`: one round trip a call.
        wrapper.cursor.execute(f"SELECT d.digest, k.probed FROM ({TERMS_DIGEST}) d (digest) "
                               "LEFT JOIN bulk_rates_key k ON k.digest = d.digest", {"tenant": tenant.id})
        digest, probed = wrapper.cursor.fetchone()
    if probed is not None:
        return probed
    plans = list(PricePlan.objects.filter(tenant=tenant).prefetch_related("rates"))
    pairs = [(plan, rate) for plan in plans for rate in plan.rates.all()]
    before_writing()
    snapshot_ids = snapshot_ids_for([snapshot_of(rate, plan) for plan, rate in pairs])
    snapshot_by_rate = {rate.id: snapshot_ids[i] for i, (_plan, rate) in enumerate(pairs)}
    rate_rows, allowance_rows = [], []
    allowances = allowances_by_plan(plan_ids=[p.id for p in plans])
    for plan in plans:
        by_kind: dict[str, dict[str, object]] = {}
        for rate in plan.rates.all():
            by_kind.setdefault(rate.kind, {})[rate.destination_prefix] = rate
        lookups = {kind: table for kind, table in by_kind.items()}
        families = {kind.rsplit(".", n)[0] for kind in by_kind for n in range(1, kind.count(".") + 1)}
        for family in sorted(families - set(by_kind)):
            table: dict[str, object] = {}
            for member in sorted(k for k in by_kind if k.startswith(family + ".")):
                for prefix, rate in by_kind[member].items():
                    table.setdefault(prefix, rate)
            lookups[family] = table
        for lookup_kind, table in lookups.items():
            walked = len(table) <= WALKED_RATES
            for prefix, rate in table.items():
                rate_rows.append((plan.id, lookup_kind, prefix, rate.id, rate.kind, rate.unit, rate.price,
                                  rate.block_size, rate.minimum, rate.increment, plan.currency_places, rate.rounding,
                                  bool(rate.tiers), plan.currency, snapshot_by_rate[rate.id], walked, max_price(rate)))
        for kind in by_kind:
            allowance = covering_allowance(allowances.get(plan.id, []), kind)
            if allowance is not None:
                allowance_rows.append((plan.id, kind, allowance.id, allowance.quantity))
    probed = any(not walked for *_columns, walked, _max_price in rate_rows)
    with connection.cursor() as wrapper:
        cursor = wrapper.cursor
        cursor.execute("TRUNCATE bulk_rates, bulk_rate_lengths, bulk_allowances, bulk_rates_key")
        cursor.execute("INSERT INTO bulk_rates_key VALUES (%s, %s)", [digest, probed])
        with cursor.copy("COPY bulk_rates FROM STDIN") as copy:
            for row in rate_rows:
                copy.write_row(row)
        with cursor.copy("COPY bulk_rate_lengths FROM STDIN") as copy:
            for row in _prefix_lengths(rate_rows):
                copy.write_row(row)
        with cursor.copy("COPY bulk_allowances FROM STDIN") as copy:
            for row in allowance_rows:
                copy.write_row(row)
    return probed


# A (plan, kind looked up) with up to this many rates finds a key's longest prefix by testing its
# rates longest first; one with more (a full international table holds thousands) by probing the
# key's own prefixes, at the lengths its rates' prefixes have. Walking 5,000 rates had made an
# import 28 times slower (bench/usage.py --extra-prefixes 5000); probing costs more plan nodes per
# record than walking a few rates.
WALKED_RATES = 16


def _prefix_lengths(rate_rows) -> list[tuple[int, str, str, list[int]]]:
    """bulk_rate_lengths' rows, for the probed (plan, kind)s: the key "0219…" can only match
    prefixes that start with "0" (or the empty one), so it is probed at their lengths only."""
    heads: dict[tuple[int, str], dict[str, set[int]]] = {}
    for plan_id, lookup_kind, prefix, *_terms, walked, _max_price in rate_rows:
        if not walked:
            heads.setdefault((plan_id, lookup_kind), {}).setdefault(prefix[:1], set()).add(len(prefix))
    rows = []
    for (plan_id, lookup_kind), lengths in heads.items():
        empty = lengths.get("", set())
        for head, found in lengths.items():
            rows.append((plan_id, lookup_kind, head, sorted(found | empty, reverse=True)))
    return rows


# What makes two sends of one id the same record (PostgreSQL's counterpart of the Python path's
# hash in ingestion.clean_record). Computed only for an id sent again: from the stored record's
# columns and the new send's, never stored. Hashing every record as it arrived, and storing the
# hash, had cost 4 µs of database time a record (a tenth of an import's).
CONTENT_HASH = """encode(sha256(convert_to(concat_ws(E'\\x1f', {t}.customer_ref, {t}.kind, trim_scale({t}.quantity)::text,
    to_char({t}.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), {t}.destination,
    {t}.attributes::text), 'UTF8')), 'hex')"""

# Everything load_rate_tables reads, as one digest (tenant, plans, rates, allowances): each row by
# its id and xmin, which every insert and update of the row changes. Hashing each row's text
# instead, sorted as text (by the database's collation), took 14 ms of each call with a tariff
# of 5,000 rates; this takes 5.
TERMS_DIGEST = f"""
    SELECT md5(%(tenant)s::text || coalesce(string_agg(version, '|' ORDER BY source, id), '')) FROM (
        SELECT 1 AS source, p.id, p.id || ':' || p.xmin AS version
        FROM {PricePlan._meta.db_table} p WHERE p.tenant_id = %(tenant)s
        UNION ALL
        SELECT 2, r.id, r.id || ':' || r.xmin FROM {Rate._meta.db_table} r
        JOIN {PricePlan._meta.db_table} p ON p.id = r.plan_id WHERE p.tenant_id = %(tenant)s
        UNION ALL
        SELECT 3, a.id, a.id || ':' || a.xmin FROM {Allowance._meta.db_table} a
        JOIN {PricePlan._meta.db_table} p ON p.id = a.plan_id WHERE p.tenant_id = %(tenant)s) terms"""

# The rate key (rating.rate_key): the model name for token usage, else the dialled number's digits.
RATE_KEY = """CASE WHEN {t}.kind LIKE 'llm.%%'
        THEN lower(btrim(coalesce(nullif({t}.destination, ''), {t}.attributes->>'model', ''), E' \\t\\n\\r\\f\\v'))
        ELSE (CASE WHEN btrim({t}.destination, E' \\t\\n\\r\\f\\v') LIKE '+%%' THEN '+' ELSE '' END)
             || regexp_replace({t}.destination, '[^0-9]', '', 'g') END"""

# The rate with the longest prefix of the key (the telecom rule, as rating.longest_prefix finds it),
# walked: one walk of bulk_rates_longest per record, longest prefix first, stopping at the first
# match (see WALKED_RATES). Joining every candidate rate and keeping one by DISTINCT ON had sorted
# the wide rows, and made the planner expect 200 rows, so the joins after it sorted them again.
_WALK = """SELECT * FROM bulk_rates br WHERE br.plan_id = p.plan_id AND br.lookup_kind = s.kind AND br.walked
                    AND starts_with(s.rate_key, br.prefix)
                ORDER BY length(br.prefix) DESC LIMIT 1"""

# Or probed at the lengths bulk_rate_lengths gives, longest first. Each probe is kept a lookup of the
# index by its LIMIT 1: as a join, the planner (no statistics on temp tables) ran it as a scan of all
# the kind's rates per record.
_PROBE = """SELECT br.* FROM unnest((SELECT bl.lengths FROM bulk_rate_lengths bl
                                          WHERE bl.plan_id = p.plan_id AND bl.lookup_kind = s.kind
                                            AND bl.head IN (left(s.rate_key, 1), '')
                                          ORDER BY bl.head DESC LIMIT 1)) WITH ORDINALITY AS l(n, i)
                 CROSS JOIN LATERAL (SELECT * FROM bulk_rates br WHERE br.plan_id = p.plan_id
                                     AND br.lookup_kind = s.kind AND NOT br.walked
                                     AND br.prefix = left(s.rate_key, l.n) LIMIT 1) br
                 WHERE l.n <= length(s.rate_key)
                 ORDER BY l.i LIMIT 1"""

# The rate found is `br` unless a charge at it could reach MAX_RECORD_CHARGE (rating.charge_out_of_range):
# then the record is unrated, `charge_out_of_range`.
_IN_RANGE = f"""LEFT JOIN LATERAL (SELECT found.* WHERE (greatest(s.quantity, found.minimum) + found.increment)
                                                  * found.max_price / found.block_size < {MAX_RECORD_CHARGE}) br ON true"""
WALK_RATES = f"LEFT JOIN LATERAL ({_WALK}) found ON true {_IN_RANGE}"
# Only when a tenant has a probed (plan, kind): its extra plan nodes cost 4% of a chunk's time.
WALK_OR_PROBE_RATES = f"LEFT JOIN LATERAL (({_WALK}) UNION ALL ({_PROBE}) LIMIT 1) found ON true {_IN_RANGE}"

# rating.billable_quantity: round up to the increment, at least the minimum; zero stays zero.
BILLABLE = """CASE WHEN m.quantity <= 0 THEN 0 WHEN m.quantity <= m.minimum THEN m.minimum
        ELSE m.minimum + ceil((m.quantity - m.minimum) / m.increment) * m.increment END"""

# rating.round_money for non-negative amounts, the rate's rounding mode at the currency's places.
ROUNDED = """CASE x.rounding
        WHEN 'down' THEN trunc(x.amount, x.places)
        WHEN 'up' THEN ceil(x.amount * power(10::numeric, x.places)) / power(10::numeric, x.places)
        WHEN 'half_even' THEN CASE
            WHEN x.amount * power(10::numeric, x.places) - floor(x.amount * power(10::numeric, x.places)) = 0.5
                 AND mod(floor(x.amount * power(10::numeric, x.places)), 2) = 0
            THEN floor(x.amount * power(10::numeric, x.places)) / power(10::numeric, x.places)
            ELSE round(x.amount, x.places) END
        ELSE round(x.amount, x.places) END"""


def _classify_and_rate(cursor, *, tenant: Tenant, fold: bool, probed: bool, local_zone: str | None) -> None:
    """Step 1: usage_work gets each staged record's hash, period, outcome and rating; with `fold`,
    also each record's `prior`: the billable quantity of the chunk's earlier records (by time,
    then seq) on the same customer, period and allowance. Charging subtracts it from what the
    allowance has left; computed here, before the chunk's turn, so the part of a chunk that
    chunks take in turn sorts nothing."""
    rate_lookup = WALK_OR_PROBE_RATES if probed else WALK_RATES
    prior, window = "NULL", ""
    if fold:
        prior = "CASE WHEN a.allowance_id IS NOT NULL THEN coalesce(sum(m.billable) OVER earlier, 0) END"
        window = """WINDOW earlier AS (PARTITION BY m.customer_id, m.period, a.allowance_id ORDER BY m.occurred_at, m.seq
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"""
    # No merge join: to merge the records with their summaries the planner sorted the wide rows by
    # customer and period, then again (incrementally) for the window; a hash join leaves one sort
    # (2-3% of an import's database time).
    execute_with_settings(
        cursor,
        f"""
        INSERT INTO usage_work (seq, external_id, customer_ref, kind, quantity, occurred_at, destination, attributes,
            period, outcome, status, unrated_reason, customer_id, prepaid, plan_id, rate_id, rated_kind,
            unit, billable, snapshot_id, currency, price, block_size, places, rounding, tiered, allowance_id,
            included, summary_id, prior)
        WITH s AS MATERIALIZED (  -- computed once per record, not once per candidate rate
            SELECT t.*, h.rate_key, h.period, h.local_day
            FROM (SELECT seq, external_id, customer_ref, kind, quantity, coalesce(destination, '') AS destination,
                         coalesce(attributes, '{{}}'::jsonb) AS attributes,
                         coalesce(occurred_at, occurred_local AT TIME ZONE %(local_zone)s) AS occurred_at
                  FROM usage_stage) t
            CROSS JOIN LATERAL (SELECT {RATE_KEY.format(t="t")} AS rate_key,
                to_char(t.occurred_at AT TIME ZONE %(tz)s, 'YYYY-MM') AS period,
                (t.occurred_at AT TIME ZONE %(tz)s)::date AS local_day) h
        ),
        -- an id sent more than once in the chunk: its later lines are duplicates or conflicts of the first
        repeated AS (
            SELECT DISTINCT ON (external_id) external_id, seq AS first_seq, {CONTENT_HASH.format(t="s")} AS first_hash
            FROM s
            WHERE external_id IN (SELECT external_id FROM usage_stage GROUP BY external_id HAVING count(*) > 1)
            ORDER BY external_id, seq
        ),
        -- each customer of the chunk once (not once per record), by index probes: with stale
        -- statistics on customers, a join was planned as a scan of them all per record
        customers AS MATERIALIZED (
            SELECT r.customer_ref, c.id, c.billing_mode, r.first_period, r.last_period
            FROM (SELECT customer_ref, min(period) AS first_period, max(period) AS last_period FROM s
                  GROUP BY customer_ref) r
            JOIN LATERAL (SELECT c.id, c.billing_mode FROM {CUSTOMER} c
                          WHERE c.tenant_id = %(tenant)s AND c.external_id = r.customer_ref LIMIT 1) c ON true
        ),
        -- their subscriptions, each as the days from its start to the next one's
        subscribed AS MATERIALIZED (
            SELECT sub.customer_id, sub.plan_id, sub.starts_on,
                   lead(sub.starts_on) OVER (PARTITION BY sub.customer_id ORDER BY sub.starts_on) AS next_starts_on
            FROM customers c
            JOIN LATERAL (SELECT sub.customer_id, sub.plan_id, sub.starts_on FROM {SUBSCRIPTION} sub
                          WHERE sub.customer_id = c.id) sub ON true
        ),
        -- their summaries of the chunk's periods: one index range scan per customer, not a probe per record
        summaries AS MATERIALIZED (
            SELECT sm.id, sm.customer_id, sm.period
            FROM customers c
            JOIN LATERAL (SELECT sm.id, sm.customer_id, sm.period FROM {SUMMARY} sm
                          WHERE sm.customer_id = c.id AND sm.period BETWEEN c.first_period AND c.last_period) sm ON true
        ),
        matched AS (  -- the longest matching prefix among the rates of the record's kind (or family)
            SELECT s.*, u.content_hash AS stored_hash, d.first_seq, d.first_hash,
                   found.rate_id IS NOT NULL AND br.rate_id IS NULL AS out_of_range,
                   c.id AS customer_id, c.billing_mode, p.plan_id, br.rate_id, br.rated_kind, br.unit, br.price,
                   br.block_size, br.minimum, br.increment, br.places, br.rounding, br.tiered, br.currency,
                   br.snapshot_id
            FROM s
            -- one index probe per record. LIMIT 1 (the key is unique) keeps the subquery from being
            -- flattened into a join, which stale statistics (autovacuum off) planned as a hash of
            -- the tenant's whole usage table: a chunk's cost grew with the table
            -- (the stored record's hash from its columns, only for an id that was stored before)
            LEFT JOIN LATERAL (SELECT su.id, {CONTENT_HASH.format(t="su")} AS content_hash FROM {USAGE} su
                               WHERE su.tenant_id = %(tenant)s AND su.external_id = s.external_id LIMIT 1) u ON true
            LEFT JOIN repeated d ON d.external_id = s.external_id
            -- only new records are rated: their customer, and the plan of its latest subscription
            -- starting on or before the record's local day
            LEFT JOIN customers c ON c.customer_ref = s.customer_ref
                 AND u.id IS NULL AND (d.first_seq IS NULL OR d.first_seq = s.seq)
            LEFT JOIN subscribed p ON p.customer_id = c.id AND p.starts_on <= s.local_day
                 AND (p.next_starts_on IS NULL OR s.local_day < p.next_starts_on)
            {rate_lookup}
        )
        SELECT m.seq, m.external_id, m.customer_ref, m.kind, m.quantity, m.occurred_at, m.destination, m.attributes,
            m.period,
            CASE WHEN m.stored_hash IS NOT NULL THEN
                     CASE WHEN m.stored_hash = {CONTENT_HASH.format(t="m")} THEN 'duplicate' ELSE 'conflict' END
                 WHEN m.first_seq IS NOT NULL AND m.first_seq <> m.seq THEN
                     CASE WHEN m.first_hash = {CONTENT_HASH.format(t="m")} THEN 'duplicate' ELSE 'conflict' END
                 ELSE 'new' END,
            CASE WHEN m.rate_id IS NULL THEN 'unrated' ELSE 'rated' END,
            CASE WHEN m.customer_id IS NULL THEN 'unknown_customer' WHEN m.plan_id IS NULL THEN 'no_plan'
                 WHEN m.out_of_range THEN 'charge_out_of_range' WHEN m.rate_id IS NULL THEN 'no_rate_for_kind'
                 ELSE '' END,
            m.customer_id, m.billing_mode = 'prepaid', m.plan_id, m.rate_id, coalesce(m.rated_kind, ''), m.unit,
            m.billable, m.snapshot_id, m.currency, m.price, m.block_size,
            m.places, m.rounding, m.tiered, a.allowance_id, a.included,
            sm.id, {prior}
        -- OFFSET 0: evaluated once per record, not again for `prior`
        FROM (SELECT m.*, CASE WHEN m.rate_id IS NOT NULL THEN {BILLABLE} END AS billable FROM matched m OFFSET 0) m
        -- the summary it folds into, where one exists (_attach_summaries creates the others)
        LEFT JOIN summaries sm ON sm.customer_id = m.customer_id AND sm.period = m.period AND m.rate_id IS NOT NULL
        LEFT JOIN bulk_allowances a ON a.plan_id = m.plan_id AND a.rated_kind = m.rated_kind
        {window}""",
        {"tz": tenant.timezone, "local_zone": local_zone or tenant.timezone, "tenant": tenant.id},
        settings={"enable_mergejoin": "off"})


def _attach_summaries(cursor, *, tenant: Tenant) -> None:
    """Step 2: every rated new record's summary, created where missing (currency of the plan)."""
    cursor.execute(
        f"""
        INSERT INTO {SUMMARY} (tenant_id, customer_id, period, currency, record_count, total_amount,
                               wallet_paid_amount, updated_at)
        SELECT DISTINCT ON (customer_id, period) %(tenant)s, customer_id, period, currency, 0, 0, 0, now()
        FROM usage_work WHERE outcome = 'new' AND status = 'rated' AND summary_id IS NULL
        ORDER BY customer_id, period, seq
        ON CONFLICT (customer_id, period) DO NOTHING""",
        {"tenant": tenant.id},
    )
    cursor.execute(
        f"""UPDATE usage_work w SET summary_id = s.id FROM {SUMMARY} s
            WHERE w.outcome = 'new' AND w.status = 'rated' AND w.summary_id IS NULL
              AND s.customer_id = w.customer_id AND s.period = w.period""")


_SETTING_VALUE = re.compile(r"[\w.]+")


def _set_local(settings: dict[str, str]) -> tuple[str, str]:
    """SQL that puts `settings` (name: value) in force, and SQL that puts back the session's values
    (SET LOCAL … TO DEFAULT: nothing of ours sets these in a session), for the caller's transaction."""
    if not all(_SETTING_VALUE.fullmatch(text) for pair in settings.items() for text in pair):
        raise ValueError(f"not a setting name and plain value: {settings}")  # they are spliced into the SQL
    return ("; ".join(f"SET LOCAL {name} = '{value}'" for name, value in settings.items()),
            "; ".join(f"SET LOCAL {name} TO DEFAULT" for name in settings))


@contextmanager
def local_settings(cursor, settings: dict[str, str]):
    """Run the statements inside with `settings` in force (see _set_local); after an error, the
    rollback that must follow puts them back."""
    before, after = _set_local(settings)
    cursor.execute(before)
    yield
    cursor.execute(after)


def execute_with_settings(cursor, sql: str, params=None, *, settings: dict[str, str]) -> list[tuple] | None:
    """Execute one statement with `settings` in force for it alone (see _set_local), in one round
    trip, where local_settings takes two more (~0.2 ms). Returns its rows, or None for a statement
    without any. After an error, the rollback that must follow puts the settings back."""
    if settings:
        before, after = _set_local(settings)
        sql = f"{before}; {sql}; {after}"
    cursor.execute(sql, params)
    for _name in settings:
        cursor.nextset()  # past each SET, to the statement's own result
    return cursor.fetchall() if cursor.description else None


# Plan without sorts, so that a summary's waiting records (ordered by occurred_at, id) are read
# from usage_pending_idx, which holds them in that order. Statistics taken when nothing waited
# (autovacuum after the workers caught up) say that no row is 'rated'; a scan of the status index
# plus a sort of its "one row" then looked as cheap, and once the waiting index was a level deeper
# it won: every waiting record of the table read per summary (400 ms a summary with 265k waiting).
PROBING_WAITING_RECORDS = {"enable_sort": "off"}


# A claimed summary's (`claimed.id`) first waiting records, in processing order: the predicate and
# order of usage_pending_idx, probed once a summary (run with PROBING_WAITING_RECORDS).
WAITING_OF_CLAIMED = f"""SELECT {{columns}} FROM {USAGE} r WHERE r.summary_id = claimed.id AND r.status = 'rated'
    ORDER BY r.occurred_at, r.id LIMIT {{limit}}"""


def waiting_record_ids(*, summary_ids: list[int], limit: int) -> list[int]:
    """The ids of the first `limit` waiting records of these summaries (ascending ids, locked by
    the caller), in processing order: each summary's read from usage_pending_idx."""
    with connection.cursor() as wrapper:
        rows = execute_with_settings(
            wrapper.cursor,
            f"""SELECT w.id FROM unnest(%(ids)s::bigint[]) AS claimed(id)
                CROSS JOIN LATERAL ({WAITING_OF_CLAIMED.format(columns="r.id, r.summary_id, r.occurred_at",
                                                               limit="%(limit)s")}) w
                ORDER BY w.summary_id, w.occurred_at, w.id LIMIT %(limit)s""",
            {"ids": summary_ids, "limit": limit}, settings=PROBING_WAITING_RECORDS)
        return [row[0] for row in rows]


def _fold_in_place(cursor, *, lock_wait: str | None = None) -> list[int]:
    """Step 3: lock and return the summaries whose new records of the chunk are charged here,
    waiting for each at most `lock_wait` (a PostgreSQL interval; None: as long as it takes)."""
    # Whole summaries only: one whose chunk records include any the workers must fold (prepaid,
    # tiered, another currency) is left to them entirely, so a summary's records are still charged
    # in time order within what arrived together.
    rows = execute_with_settings(
        cursor,
        f"""SELECT s.id FROM {SUMMARY} s WHERE s.id IN (
                SELECT w.summary_id FROM usage_work w JOIN {SUMMARY} ws ON ws.id = w.summary_id
                WHERE w.outcome = 'new' AND w.status = 'rated'
                GROUP BY w.summary_id
                HAVING bool_and(NOT w.prepaid AND NOT w.tiered AND w.currency = ws.currency))
            ORDER BY s.id FOR NO KEY UPDATE OF s""",
        settings={"lock_timeout": lock_wait} if lock_wait is not None else {})
    locked = [row[0] for row in rows]
    # Nor a summary with records already waiting for a worker: they arrived first, so they are
    # charged first (read after the locks, so it sees what committed while we waited for them).
    # One probe of the waiting index a summary (see PROBING_WAITING_RECORDS).
    rows = execute_with_settings(
        cursor,
        f"""SELECT claimed.id FROM unnest(%(ids)s::bigint[]) AS claimed(id)
            CROSS JOIN LATERAL ({WAITING_OF_CLAIMED.format(columns="1", limit="1")}) first""",
        {"ids": locked}, settings=PROBING_WAITING_RECORDS)
    waiting = {row[0] for row in rows}
    return [i for i in locked if i not in waiting]


# The allowance a record uses: what is left of it (its use so far in `au`, else all of `included`)
# less `prior`, the billable quantity of the earlier records charged with it, capped to the
# record's billable quantity. Allowance use is thus a running sum in time order.
COVERED = """CASE WHEN {v}.allowance_id IS NULL THEN 0 ELSE greatest(0, least({v}.billable,
        coalesce(au.included, {v}.included) - coalesce(au.used, 0) - {prior})) END"""

# What the part beyond the allowance costs, before rounding (ROUNDED reads it as x.amount).
AMOUNT = "({v}.billable - {v}.covered) * {v}.price / {v}.block_size"


def charge_rows(cursor, *, table: str, into: str, terms: str, params: dict) -> None:
    """Charge the rated rows of a fold's work table (`seq` in processing order) into the table
    `into` (of BILLED_ROWS); each charge is rounded once. The price terms and allowance come from the
    relation `t` of (snapshot_id, plan_id, rated_kind). Inserting the charged rows into a second
    table costs less than updating the work table's rows in place: 3.6 against 5.6 ms of a
    1,000-record fold batch."""
    prior = "coalesce(sum(v.billable) OVER running - v.billable, 0)"
    cursor.execute(
        f"""
        INSERT INTO {into} (seq, tid, summary_id, rated_kind, unit, allowance_id, included, quantity, billable,
                            covered, charged)
        SELECT x.seq, x.tid, x.summary_id, x.rated_kind, x.unit, x.allowance_id, x.included, x.quantity, x.billable,
               x.covered, {ROUNDED}
        FROM (
            SELECT y.*, {AMOUNT.format(v="y")} AS amount
            FROM (
                SELECT v.seq, v.tid, v.summary_id, v.rated_kind, v.quantity, v.billable, v.price, v.block_size,
                       v.places, v.rounding, v.unit, v.allowance_id, v.included,
                       {COVERED.format(v="v", prior=prior)} AS covered
                FROM (SELECT f.seq, f.tid, f.summary_id, f.rated_kind, f.occurred_at, f.quantity, f.billable, t.price,
                             t.block_size, t.places, t.rounding, t.unit, t.allowance_id, t.included
                      FROM {table} f JOIN {terms} ON t.snapshot_id = f.snapshot_id AND t.plan_id = f.plan_id
                                                 AND t.rated_kind = f.rated_kind) v
                LEFT JOIN {ALLOWANCE_USAGE} au ON au.summary_id = v.summary_id AND au.allowance_id = v.allowance_id
                WINDOW running AS (PARTITION BY v.summary_id, v.allowance_id ORDER BY v.occurred_at, v.seq
                                   ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
            ) y
        ) x""",
        params,
    )


def allowance_moves(cursor, *, table: str) -> list[tuple[int, int, Decimal, Decimal, Decimal]]:
    """Per (summary, allowance) touched by the rows of `table` (of BILLED_ROWS): use before and after, and
    the included quantity (for threshold alerts); read before `add_to_summaries` writes."""
    cursor.execute(
        f"""
        SELECT m.summary_id, m.allowance_id, coalesce(au.used, 0), coalesce(au.used, 0) + m.covered,
               coalesce(au.included, m.included)
        FROM (SELECT summary_id, allowance_id, sum(covered) AS covered, max(included) AS included FROM {table}
              WHERE allowance_id IS NOT NULL
              GROUP BY summary_id, allowance_id) m
        LEFT JOIN {ALLOWANCE_USAGE} au ON au.summary_id = m.summary_id AND au.allowance_id = m.allowance_id""")
    return cursor.fetchall()


INSERTED_COLUMNS = (
    "tenant_id, external_id, content_hash, ingest_token, customer_ref, customer_id, kind, quantity, occurred_at, "
    "period, destination, attributes, received_at, status, unrated_reason, plan_id, rated_kind, billable_quantity, "
    "snapshot_id, summary_id, batch_id, allowance_used, charged_amount, billed_at")


def _insert(cursor, *, tenant: Tenant, batch_id: int | None, folded: list[int]) -> None:
    """Step 4: store the new records, those of the `folded` summaries charged and billed (and
    copied to usage_billed); raises _LostRace when a concurrent call stored one first.
    Charging as the rows are inserted, not by an UPDATE of the work table before, spares
    rewriting each wide work row. A plain INSERT (not ON CONFLICT, whose speculative insertion
    costs more per row): step 1 found these ids unstored, so a unique violation can only be
    such a race."""
    from psycopg import errors

    charged = f"""
        SELECT x.*, CASE WHEN x.billed THEN {ROUNDED} END AS charged
        FROM (
            SELECT w.*, {AMOUNT.format(v="w")} AS amount
            FROM (
                SELECT v.seq, v.external_id, v.customer_ref, v.customer_id, v.kind, v.quantity,
                       v.occurred_at, v.period, v.destination, v.attributes, v.status, v.unrated_reason, v.plan_id,
                       v.rated_kind, v.unit, v.billable, v.snapshot_id, v.summary_id, v.allowance_id, v.included,
                       v.price, v.block_size, v.places, v.rounding, v.billed,
                       CASE WHEN v.billed THEN {COVERED.format(v="v", prior="v.prior")} END AS covered
                -- a hashed lookup in the array of summaries folded here, per record
                FROM (SELECT *, coalesce(summary_id = ANY(%(folded)s::bigint[]), false) AS billed
                      FROM usage_work WHERE outcome = 'new') v
                LEFT JOIN {ALLOWANCE_USAGE} au ON v.billed AND au.summary_id = v.summary_id
                                              AND au.allowance_id = v.allowance_id
            ) w
        ) x"""
    stored = f"""
        INSERT INTO {USAGE} ({INSERTED_COLUMNS})
        SELECT %(tenant)s, external_id, '', '', customer_ref, customer_id, kind, quantity,
               occurred_at, period, destination, attributes, now(), CASE WHEN billed THEN 'billed' ELSE status END,
               unrated_reason, plan_id, rated_kind, billable, snapshot_id, summary_id,
               CASE WHEN billed THEN %(batch)s::bigint END, covered, charged, CASE WHEN billed THEN now() END
        FROM charged ORDER BY seq"""
    if folded:
        statement = f"""
            WITH charged AS MATERIALIZED ({charged}), stored AS ({stored})
            INSERT INTO usage_billed (summary_id, rated_kind, unit, allowance_id, included, quantity, billable,
                                      covered, charged)
            SELECT summary_id, rated_kind, unit, allowance_id, included, quantity, billable, covered, charged
            FROM charged WHERE billed"""
    else:  # nothing billed here: no rows to keep for the summaries, so nothing to materialise
        statement = f"WITH charged AS ({charged}) {stored}"
    try:
        cursor.execute(statement, {"tenant": tenant.id, "batch": batch_id,
                                   "folded": folded})
    except (errors.UniqueViolation, errors.DeadlockDetected) as exc:  # two chunks sharing ids, in other orders
        raise _LostRace() from exc


@dataclass(frozen=True)
class Added:
    records: int
    charged: Decimal


def add_to_summaries(cursor, *, table: str, wallet_paid: dict[int, Decimal] | None = None) -> Added:
    """Step 5: add the rows of `table` (of BILLED_ROWS) to their lines, allowance use and summaries
    (locked by the caller); `wallet_paid` (by summary id) adds what prepaid wallets paid of them to
    their wallet_paid_amount, in the same UPDATE (a second one had written each row twice)."""
    paid, params = "", None
    if wallet_paid:  # by array lookup, as set_folding._mark_billed finds ledger entries
        paid = ("wallet_paid_amount = s.wallet_paid_amount"
                " + coalesce((%s::numeric[])[array_position(%s::bigint[], s.id)], 0),")
        params = [array_literal(wallet_paid.values()), array_literal(wallet_paid)]
    cursor.execute(
        f"""
        INSERT INTO {LINE} AS l (summary_id, kind, unit, record_count, quantity, billable_quantity, allowance_used,
                                 chargeable_quantity, charged_amount)
        SELECT summary_id, rated_kind, min(unit), count(*), sum(quantity), sum(billable), sum(covered),
               sum(billable - covered), sum(charged)
        FROM {table} GROUP BY summary_id, rated_kind
        ON CONFLICT (summary_id, kind) DO UPDATE SET
            record_count = l.record_count + EXCLUDED.record_count, quantity = l.quantity + EXCLUDED.quantity,
            billable_quantity = l.billable_quantity + EXCLUDED.billable_quantity,
            allowance_used = l.allowance_used + EXCLUDED.allowance_used,
            chargeable_quantity = l.chargeable_quantity + EXCLUDED.chargeable_quantity,
            charged_amount = l.charged_amount + EXCLUDED.charged_amount""")
    cursor.execute(
        f"""
        INSERT INTO {ALLOWANCE_USAGE} AS a (summary_id, allowance_id, included, used)
        SELECT summary_id, allowance_id, max(included), sum(covered)
        FROM {table} WHERE allowance_id IS NOT NULL
        GROUP BY summary_id, allowance_id
        ON CONFLICT (summary_id, allowance_id) DO UPDATE SET used = a.used + EXCLUDED.used""")
    cursor.execute(
        f"""
        UPDATE {SUMMARY} s SET record_count = s.record_count + v.n, total_amount = s.total_amount + v.total, {paid}
                               updated_at = clock_timestamp()  -- not the transaction's start: later than any event sent before
        FROM (SELECT summary_id, count(*) AS n, sum(charged) AS total FROM {table}
              GROUP BY summary_id) v
        WHERE s.id = v.summary_id
        RETURNING v.n, v.total""", params)
    rows = cursor.fetchall()
    return Added(sum(row[0] for row in rows), sum((row[1] for row in rows), ZERO))


def _answer(cursor, result: ChunkResult, limit: int = 20) -> None:
    """The chunk's outcomes, counts and first conflicting ids: known once it is classified."""
    cursor.execute("""
        SELECT count(*) FILTER (WHERE outcome = 'new'),
               coalesce(array_agg(seq ORDER BY seq) FILTER (WHERE outcome <> 'new'), '{}'),
               coalesce(array_agg(outcome ORDER BY seq) FILTER (WHERE outcome <> 'new'), '{}'),
               coalesce(array_agg(external_id ORDER BY seq) FILTER (WHERE outcome <> 'new'), '{}')
        FROM usage_work""")
    accepted, seqs, outcomes, external_ids = cursor.fetchone()
    result.outcomes = dict(zip(seqs, outcomes))
    result.conflict_ids = [i for i, outcome in zip(external_ids, outcomes) if outcome == "conflict"][:limit]
    result.counts = Counter(outcomes) + Counter(accepted=accepted)


def store_stage_folding(*, tenant: Tenant, folded_by: str, wait_turn: Callable[[], None] = _nothing,
                        local_zone: str | None = None, lock_wait: str | None = None) -> ChunkResult:
    """store_stage with `fold`, unless a summary cannot hold the staged records (a numeric overflow
    would fail them all): then they are stored unfolded, and the workers' fold sets aside the
    records of the summary that overflows. With `lock_wait` (a PostgreSQL interval), they are also
    stored unfolded when another transaction holds one of their summaries longer than that."""
    from tarifa.metering.services.folding import overflowed

    staged = transaction.savepoint()
    try:
        result = store_stage(tenant=tenant, fold=True, folded_by=folded_by, wait_turn=wait_turn, local_zone=local_zone,
                             lock_wait=lock_wait)
    except Exception as error:
        if not overflowed(error) and sqlstate(error) != LOCK_NOT_AVAILABLE:
            raise
        transaction.savepoint_rollback(staged)
        return store_stage(tenant=tenant, fold=False, folded_by=folded_by, wait_turn=wait_turn, local_zone=local_zone)
    transaction.savepoint_commit(staged)
    return result


def store_stage(*, tenant: Tenant, fold: bool, folded_by: str = "", wait_turn: Callable[[], None] = _nothing,
                local_zone: str | None = None, lock_wait: str | None = None) -> ChunkResult:
    """Deduplicate, rate and store what is staged (and fold what can be folded here, with `fold`),
    in the caller's transaction, which staged the records after create_stage (so the work tables
    start empty, as they are again after a retry's rollback to the savepoint; its commit empties
    them all). `wait_turn` is called (maybe more than once) before anything shared is written:
    everything before it only reads and fills temp tables. Staged wall-clock times
    (occurred_local) are read in `local_zone`, by default the tenant's time zone."""
    from tarifa.metering.services.folding import crossed_thresholds, emit_events_of_summaries
    from tarifa.metering.services.ingestion import queue_folds

    probed = load_rate_tables(tenant=tenant, before_writing=wait_turn)
    with connection.cursor() as wrapper:
        cursor = wrapper.cursor
        # Sorts of a chunk fit in memory; compiling these one-off plans (JIT) costs more than it saves;
        # ANALYZE of the work table (below) samples 3,000 rows, not 30,000: they show its few-valued
        # columns as well, and had cost 3% of an import's database time. One round trip.
        cursor.execute("SET LOCAL work_mem = '64MB'; SET LOCAL jit = off; SET LOCAL default_statistics_target = 10")
        for _attempt in range(5):
            savepoint = transaction.savepoint()
            try:
                _classify_and_rate(cursor, tenant=tenant, fold=fold, probed=probed, local_zone=local_zone)
                # Temp tables get no autovacuum statistics; these columns steer the joins that
                # follow. Analysed before the turn (only the rows of new summaries change after).
                cursor.execute("ANALYZE usage_work (seq, outcome, status, summary_id, allowance_id)")
                result = ChunkResult()
                _answer(cursor, result)  # here, not in the part of a chunk that the next one waits for
                wait_turn()
                _attach_summaries(cursor, tenant=tenant)
                summary_ids = _fold_in_place(cursor, lock_wait=lock_wait) if fold else []
                batch = None
                if summary_ids:
                    batch = FoldBatch.objects.create(record_count=0, charged_amount=ZERO, folded_by=folded_by,
                                                     summary_count=len(summary_ids))
                _insert(cursor, tenant=tenant, batch_id=batch.id if batch else None, folded=summary_ids)
            except _LostRace:
                transaction.savepoint_rollback(savepoint)
                continue
            transaction.savepoint_commit(savepoint)
            break
        else:
            raise RuntimeError("bulk ingestion kept losing insert races; try again")
        if batch is not None:
            moves = allowance_moves(cursor, table="usage_billed")
            added = add_to_summaries(cursor, table="usage_billed")
            result.folded, result.charged = added.records, added.charged
            FoldBatch.objects.filter(pk=batch.id).update(record_count=result.folded, charged_amount=result.charged)
            count_on_commit(USAGE_FOLDED, result.folded)
            emit_events_of_summaries(ids=summary_ids, crossed=crossed_thresholds(moves), batch_id=batch.id)
        # The summaries with records left waiting, marked for the workers (in id order, as summaries
        # are locked), in one round trip.
        cursor.execute(
            f"""WITH pending AS (SELECT DISTINCT summary_id FROM usage_work
                                 WHERE outcome = 'new' AND status = 'rated'
                                   AND summary_id <> ALL(%(folded)s::bigint[])),
                     marked AS (INSERT INTO {PendingSummary._meta.db_table} (summary_id, marked_at)
                                SELECT summary_id, now() FROM pending ORDER BY summary_id ON CONFLICT DO NOTHING)
                SELECT summary_id FROM pending""",
            {"folded": summary_ids})
        result.pending_summaries = {row[0] for row in cursor.fetchall()}
    if result.pending_summaries:
        queue_folds()
    return result
