from django.contrib import admin

from tarifa.core.admin import ReadOnly
from tarifa.runtime.models import Job, PeriodicSchedule, WorkerHeartbeat


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """Jobs are read here and deleted when an operator must; `tarifa jobs retry` re-queues them. An
    edited status or lease would have broken the claim protocol workers rely on."""

    list_display = ("id", "type", "queue", "priority", "status", "run_at", "attempts", "leased_by")
    list_filter = ("status", "queue", "type")
    search_fields = ("unique_key",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(PeriodicSchedule)
class PeriodicScheduleAdmin(admin.ModelAdmin):
    """Schedules come from the code and settings (TARIFA_*_CRON), which the scheduler writes back
    when it starts; an operator may pause or resume one. A cron typed here that croniter could not
    read had failed every tick: that schedule and those after it stopped firing."""

    list_display = ("name", "cron", "timezone", "job_type", "enabled", "next_run_at", "last_run_at")
    fields = ("name", "cron", "timezone", "job_type", "queue", "payload", "enabled", "next_run_at", "last_run_at")
    readonly_fields = ("name", "cron", "timezone", "job_type", "queue", "payload", "next_run_at", "last_run_at")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("worker_id", "kind", "status", "last_beat_at", "current_job_type", "jobs_done")
    list_filter = ("kind", "status")
