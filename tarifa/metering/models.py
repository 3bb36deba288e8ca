from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q

from tarifa.core.money import MONEY, QUANTITY
from tarifa.tenants.models import Customer, Tenant

DEFAULT_THRESHOLDS = [50, 80, 100]


class PricePlan(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="plans")
    code = models.SlugField(max_length=64)
    name = models.CharField(max_length=200)
    currency = models.CharField(max_length=16, default="BRL", help_text="ISO 4217 code or a named credit unit.")
    currency_places = models.PositiveSmallIntegerField(default=2)
    alert_thresholds = models.JSONField(default=list, blank=True, help_text="Percentages of each allowance.")
    monthly_grant = models.DecimalField(**MONEY, null=True, blank=True,
                                        help_text="Credit granted to each prepaid wallet on the 1st of each month.")
    grant_expiry_days = models.PositiveIntegerField(null=True, blank=True,
                                                    help_text="Unused granted credit is removed after this many days.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "code"], name="plan_unique_code"),
            # Charges are rounded to these places and stored in 6-place money columns.
            models.CheckConstraint(condition=Q(currency_places__lte=6), name="plan_currency_places_in_range"),
        ]

    def __str__(self) -> str:
        return self.code

    @property
    def thresholds(self) -> list[int]:
        return sorted(self.alert_thresholds or DEFAULT_THRESHOLDS)


class Rate(models.Model):
    class Unit(models.TextChoices):
        SECOND = "second"
        TOKEN = "token"
        MESSAGE = "message"
        EVENT = "event"

    plan = models.ForeignKey(PricePlan, on_delete=models.CASCADE, related_name="rates")
    kind = models.CharField(max_length=64)
    destination_prefix = models.CharField(max_length=32, blank=True, default="")
    description = models.CharField(max_length=200, blank=True, default="")
    unit = models.CharField(max_length=16, choices=Unit.choices, default=Unit.EVENT)
    price = models.DecimalField(**MONEY, help_text="Price per block.")
    block_size = models.DecimalField(**QUANTITY, default=Decimal(1), help_text="Units per priced block.")
    minimum = models.DecimalField(**QUANTITY, default=Decimal(0))
    increment = models.DecimalField(**QUANTITY, default=Decimal(1))
    tiers = models.JSONField(default=list, blank=True, help_text='[{"up_to": "1000000", "price": "0.50"}, …]')
    rounding = models.CharField(max_length=16, default="half_up")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["plan", "kind", "destination_prefix"], name="rate_unique_kind_prefix"),
            # What rating divides by, and what it must never make negative, whoever writes the row
            # (the plan service and the admin's forms check them first, with a clear message).
            models.CheckConstraint(condition=Q(block_size__gt=0, increment__gt=0, price__gte=0, minimum__gte=0),
                                   name="rate_terms_in_range"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}{' ' + self.destination_prefix if self.destination_prefix else ''}"


class Allowance(models.Model):
    """Included usage per period ("franquia"), shared by a group of kinds."""

    plan = models.ForeignKey(PricePlan, on_delete=models.CASCADE, related_name="allowances")
    code = models.SlugField(max_length=64)
    kinds = models.JSONField(help_text="Kinds (or kind prefixes ending in '.*') that consume it.")
    quantity = models.DecimalField(**QUANTITY, help_text="In the kinds' unit (seconds for calls).")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["plan", "code"], name="allowance_unique_code"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="allowance_quantity_positive"),
        ]

    def __str__(self) -> str:
        return self.code

    def covers(self, kind: str) -> bool:
        return any(kind == k or (k.endswith(".*") and kind.startswith(k[:-1])) for k in self.kinds)


class Subscription(models.Model):
    """A customer's plan from `starts_on` (in the tenant's time zone) until the next subscription."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="subscriptions")
    plan = models.ForeignKey(PricePlan, on_delete=models.PROTECT, related_name="subscriptions")
    starts_on = models.DateField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["customer", "starts_on"], name="subscription_one_per_day")]


class RateSnapshot(models.Model):
    """The exact terms a record was rated with, stored once per distinct content."""

    digest = models.CharField(max_length=64, unique=True)
    data = models.JSONField()


class UsageRecord(models.Model):
    """One usage event as sent, how it was rated, and how it was folded.

    The hottest table: besides the primary key it carries four indexes and no foreign-key
    constraint in the database. Every reference is written by the ingestion, rating and folding
    services only, from rows they just read; tenant and customer deletion is guarded by Django
    (CASCADE, PROTECT), plan, snapshot and summary are never deleted while referenced, and
    `tarifa billing reconcile` checks the sums. The deferred constraint checks had cost a fifth of
    a bulk import's time, spent at each commit.
    """

    class Status(models.TextChoices):
        RATED = "rated"  # priced, waiting to be folded
        UNRATED = "unrated"  # could not be priced; see unrated_reason
        BILLED = "billed"  # folded into its summary (and debited, for prepaid customers)
        FAILED = "failed"  # prepaid and not covered by the wallet; see failure_code, retried on top-up
        REVERSED = "reversed"  # was billed; taken out of its summary (and refunded)

    class UnratedReason(models.TextChoices):
        """Why a record is unrated (`unrated_reason`): listed, fixed, then rated again."""

        UNKNOWN_CUSTOMER = "unknown_customer"  # no customer has the record's external id
        NO_PLAN = "no_plan"  # the customer had no plan on the record's local day
        NO_RATE_FOR_KIND = "no_rate_for_kind"  # the plan prices neither the kind nor its family
        CHARGE_OUT_OF_RANGE = "charge_out_of_range"  # the record alone would cost beyond a charge's limit
        CURRENCY_MISMATCH = "currency_mismatch"  # its rate's currency is not its summary's
        SUMMARY_OUT_OF_RANGE = "summary_out_of_range"  # its summary cannot hold the month's usage

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False,
                               db_constraint=False)
    external_id = models.CharField(max_length=128, help_text="The client's idempotency key.")
    # SQLite's Python path stores its hash of what was sent, and which call inserted the row (to
    # tell its own inserts from a concurrent call's). PostgreSQL leaves both empty, a third of a
    # CDR's row without its attributes: it hashes the stored columns when an id is sent again
    # (bulk.CONTENT_HASH), and a unique violation tells it a concurrent call won.
    content_hash = models.CharField(max_length=64)
    ingest_token = models.CharField(max_length=32, help_text="Which ingestion call inserted the row.")
    customer_ref = models.CharField(max_length=128, help_text="Customer external_id as sent.")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
                                 db_index=False, db_constraint=False)
    kind = models.CharField(max_length=64, help_text="As sent.")
    quantity = models.DecimalField(**QUANTITY)
    occurred_at = models.DateTimeField()
    period = models.CharField(max_length=7, help_text="YYYY-MM in the tenant's time zone.")
    destination = models.CharField(max_length=64, blank=True, default="")
    attributes = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices)
    unrated_reason = models.CharField(max_length=32, blank=True, default="")
    # rating
    plan = models.ForeignKey(PricePlan, on_delete=models.DO_NOTHING, null=True, blank=True, related_name="+",
                             db_constraint=False, db_index=False)
    rated_kind = models.CharField(max_length=64, blank=True, default="")
    billable_quantity = models.DecimalField(**QUANTITY, null=True, blank=True)
    snapshot = models.ForeignKey(RateSnapshot, on_delete=models.DO_NOTHING, null=True, blank=True,
                                 related_name="+", db_constraint=False, db_index=False)
    summary = models.ForeignKey("Summary", on_delete=models.DO_NOTHING, null=True, blank=True, related_name="+",
                                db_constraint=False, db_index=False)
    # folding
    batch_id = models.BigIntegerField(null=True, blank=True)
    allowance_used = models.DecimalField(**QUANTITY, null=True, blank=True)
    charged_amount = models.DecimalField(**MONEY, null=True, blank=True)
    billed_at = models.DateTimeField(null=True, blank=True)
    # prepaid charging and reversal
    wallet_entry = models.ForeignKey("wallets.LedgerEntry", on_delete=models.DO_NOTHING, null=True, blank=True,
                                     related_name="records", db_constraint=False, db_index=False,
                                     help_text="The usage_debit that paid for it.")
    failure_code = models.CharField(max_length=32, blank=True, default="", db_default="")  # COPY omits it
    amount_due = models.DecimalField(**MONEY, null=True, blank=True, help_text="What it cost when it last failed.")
    reversed_at = models.DateTimeField(null=True, blank=True)
    reversal_reason = models.CharField(max_length=200, blank=True, default="", db_default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "external_id"], name="usage_unique_external_id"),
        ]
        indexes = [
            # Folding takes the waiting records of the summaries it claimed, oldest first.
            models.Index(fields=["summary", "occurred_at", "id"], name="usage_pending_idx",
                         condition=Q(status="rated")),
            # Records that need attention or are on their way (rated, unrated, failed, reversed):
            # billed ones, nearly all of the table, stay out, so folding writes one index entry
            # less per record; lists of billed records go by customer or by id.
            models.Index(fields=["tenant", "status", "period"], name="usage_status_idx", condition=~Q(status="billed")),
            models.Index(fields=["customer", "period", "status"], name="usage_customer_period_idx"),
            models.Index(fields=["wallet_entry"], name="usage_wallet_entry_idx", condition=Q(wallet_entry__isnull=False)),
        ]


class FoldBatch(models.Model):
    """One fold transaction: the records marked with its id moved into `summary_count` summaries."""

    record_count = models.PositiveIntegerField()
    summary_count = models.PositiveIntegerField(default=1)
    charged_amount = models.DecimalField(**MONEY)
    folded_by = models.CharField(max_length=128, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)


class Summary(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    # No index of its own: summary_one_per_period leads with the customer.
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="summaries", db_index=False)
    period = models.CharField(max_length=7)
    currency = models.CharField(max_length=16)
    record_count = models.PositiveIntegerField(default=0)
    total_amount = models.DecimalField(**MONEY, default=Decimal(0))
    # What prepaid wallets paid of the total, kept by folds, reversals and re-rates: a customer can
    # change billing mode mid-month, and the close invoices the rest (total - wallet_paid_amount).
    wallet_paid_amount = models.DecimalField(**MONEY, default=Decimal(0))
    updated_at = models.DateTimeField(auto_now=True)
    last_event_at = models.DateTimeField(null=True, blank=True, help_text="When summary.updated was last emitted.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["customer", "period"], name="summary_one_per_period")]


class PendingSummary(models.Model):
    """Marks a summary with rated records waiting. Folders claim these rows with SKIP LOCKED, so
    each summary is folded by one worker at a time, its records in time order."""

    summary = models.OneToOneField(Summary, on_delete=models.CASCADE, primary_key=True, related_name="+")
    marked_at = models.DateTimeField(auto_now_add=True)


class SummaryLine(models.Model):
    # No index of its own: summary_line_per_kind leads with the summary.
    summary = models.ForeignKey(Summary, on_delete=models.CASCADE, related_name="lines", db_index=False)
    kind = models.CharField(max_length=64)
    unit = models.CharField(max_length=16)
    record_count = models.PositiveIntegerField(default=0)
    quantity = models.DecimalField(**QUANTITY, default=Decimal(0))
    billable_quantity = models.DecimalField(**QUANTITY, default=Decimal(0))
    allowance_used = models.DecimalField(**QUANTITY, default=Decimal(0))
    chargeable_quantity = models.DecimalField(**QUANTITY, default=Decimal(0))
    charged_amount = models.DecimalField(**MONEY, default=Decimal(0))

    class Meta:
        constraints = [models.UniqueConstraint(fields=["summary", "kind"], name="summary_line_per_kind")]


class AllowanceUsage(models.Model):
    # No index of its own: allowance_usage_once leads with the summary.
    summary = models.ForeignKey(Summary, on_delete=models.CASCADE, related_name="allowance_usage", db_index=False)
    allowance = models.ForeignKey(Allowance, on_delete=models.CASCADE, related_name="+")
    included = models.DecimalField(**QUANTITY)
    used = models.DecimalField(**QUANTITY, default=Decimal(0))

    class Meta:
        constraints = [models.UniqueConstraint(fields=["summary", "allowance"], name="allowance_usage_once")]
