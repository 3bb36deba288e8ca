from django.contrib import admin

from tarifa.runtime.models import Job, PeriodicSchedule, WorkerHeartbeat


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "type", "queue", "priority", "status", "run_at", "attempts", "leased_by")
    list_filter = ("status", "queue", "type")
    search_fields = ("unique_key",)


@admin.register(PeriodicSchedule)
class PeriodicScheduleAdmin(admin.ModelAdmin):
    list_display = ("name", "cron", "timezone", "job_type", "enabled", "next_run_at", "last_run_at")


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("worker_id", "kind", "status", "last_beat_at", "current_job_type", "jobs_done")
    list_filter = ("kind", "status")
