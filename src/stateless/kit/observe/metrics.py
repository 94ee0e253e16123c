"""Prometheus series on a registry owned by one app instance (no global registry to reset in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "stateless_http_requests_total",
            "HTTP requests",
            ["method", "route", "status_class"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "stateless_http_request_duration_seconds",
            "HTTP request duration",
            ["route"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.event_loop_lag = Histogram(
            "stateless_event_loop_lag_seconds",
            "How late the event loop ran a timer: time some callback held the loop",
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.background_failures = Counter(
            "stateless_background_job_failures_total",
            "Background job runs that raised (the next run happens anyway)",
            ["job"],
            registry=r,
        )
        self.rate_limit_rejections = Counter(
            "stateless_rate_limit_rejections_total",
            "Requests refused with 429",
            ["route"],
            registry=r,
        )
        self.redis_fail_open = Counter(
            "stateless_redis_fail_open_total",
            "Rate-limit checks allowed because Redis was unreachable",
            registry=r,
        )
        self.cleanup_deleted = Counter(
            "stateless_cleanup_deleted_rows_total", "Expired rows deleted", ["kind"], registry=r
        )
        self.cleanup_runs = Counter(
            "stateless_cleanup_runs_total", "Cleanup runs", ["outcome"], registry=r
        )
        self.cleanup_errors = Counter(
            "stateless_cleanup_errors_total", "Cleanup failures", ["kind"], registry=r
        )
        self.cleanup_seconds = Histogram(
            "stateless_cleanup_run_duration_seconds", "Cleanup run duration", registry=r
        )
        self.cleanup_last_success = Gauge(
            "stateless_cleanup_last_success_timestamp_seconds",
            "Unix time of the last successful cleanup run",
            registry=r,
        )
        self.cleanup_leader = Gauge(
            "stateless_cleanup_is_leader", "1 when this process leads background work", registry=r
        )
        # Deployment-wide deletion lag, per kind: measured by the cleanup leader at the start
        # of each pass (what the pass found), cleared when this process stops leading.
        self.expired_rows = Gauge(
            "stateless_expired_rows",
            "Expired rows awaiting erasure when the last cleanup pass began (counted up to"
            " 1,000,000; past that, the planner's estimate where it is higher)",
            ["kind"],
            registry=r,
        )
        # The pace of the last cleanup batch per kind: the share of the time it deletes, and the
        # other sessions it saw working in the database (Postgres), which make it step back.
        self.cleanup_share = Gauge(
            "stateless_cleanup_share",
            "Share of the time the last cleanup batch gave to deleting (the rest is rest)",
            ["kind"],
            registry=r,
        )
        self.cleanup_others_at_work = Gauge(
            "stateless_cleanup_others_at_work",
            "Other database sessions at work during the last cleanup batches (smoothed)",
            ["kind"],
            registry=r,
        )
        self.oldest_expired_age = Gauge(
            "stateless_oldest_expired_age_seconds",
            "How long the oldest expired row had waited for erasure when the last pass began",
            ["kind"],
            registry=r,
        )
        self.tasks = Counter(
            "stateless_bot_tasks_total",
            "Bot tasks by type and outcome",
            ["task_type", "outcome"],
            registry=r,
        )
        self.web_pushes = Counter(
            "stateless_webpush_notifications_total",
            "Web Push messages by outcome",
            ["outcome"],
            registry=r,
        )
        self.pushes = Counter(
            "stateless_push_notifications_total", "APNs pushes by outcome", ["outcome"], registry=r
        )
        self.storekit_validations = Counter(
            "stateless_storekit_validations_total",
            "Purchase validations by proof kind and status",
            ["proof", "status"],
            registry=r,
        )
        self.storekit_notifications = Counter(
            "stateless_storekit_notifications_total",
            "App Store Server Notifications by outcome",
            ["outcome"],
            registry=r,
        )
        self.affiliate_conversions = Counter(
            "stateless_affiliate_conversions_total",
            "Referral conversions by outcome (recorded, duplicate, invalid_code)",
            ["outcome"],
            registry=r,
        )
