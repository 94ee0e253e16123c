"""SPEC 10: per tenant and route, shared through Redis, overrides, fail-open when Redis is down."""

from __future__ import annotations

from tests.conftest import ClientFactory, TenantHandle
from tests.services import Services
from tests.test_core import assert_problem

DRAFTS = "/api/v1/drafts"


async def test_limits_are_shared_across_replicas_through_redis(
    make_client: ClientFactory, services: Services, make_tenant
) -> None:
    tenant = await make_tenant("shared", rate_limits=["drafts.create=5/minute"])
    replica_a = await make_client(redis_url=services.redis_url)
    replica_b = await make_client(redis_url=services.redis_url)
    statuses = []
    for i in range(6):
        replica = replica_a if i % 2 == 0 else replica_b
        r = await replica.post(DRAFTS, headers=tenant.pk, json={"content": str(i)})
        statuses.append(r.status_code)
    assert statuses == [201] * 5 + [429]
    assert r.headers["ratelimit-policy"] == '"drafts.create";q=5;w=60'
    assert int(r.headers["retry-after"]) >= 1
    # the limit is per route: reading still works
    assert (await replica_b.get(DRAFTS, headers=tenant.sk)).status_code == 200


async def test_default_limit_and_headers_on_ordinary_routes(
    make_client: ClientFactory, services: Services, tenant: TenantHandle
) -> None:
    client = await make_client(redis_url=services.redis_url)
    r = await client.get(DRAFTS, headers=tenant.sk)
    assert r.headers["ratelimit-policy"] == '"drafts.list";q=600;w=60'
    assert r.headers["ratelimit"].startswith('"drafts.list";r=599;t=')


async def test_dead_redis_keeps_the_api_up_and_counts_fail_open(
    make_client: ClientFactory, tenant: TenantHandle
) -> None:
    client = await make_client(redis_url="redis://127.0.0.1:1/0")
    for _ in range(12):
        r = await client.get("/health", headers={"X-App-ID": tenant.app_id})
        assert r.status_code == 200
    r = await client.post(DRAFTS, headers=tenant.pk, json={"content": "still works"})
    assert r.status_code == 201
    metrics = (await client.get("/metrics")).text
    line = next(x for x in metrics.splitlines() if x.startswith("stateless_redis_fail_open_total"))
    assert float(line.split()[-1]) >= 13


async def test_rejections_are_counted(make_client: ClientFactory) -> None:
    client = await make_client()
    for _ in range(11):
        r = await client.get("/health")
    assert_problem(r, 429, "rate_limited")
    metrics = (await client.get("/metrics")).text
    assert 'stateless_rate_limit_rejections_total{route="health"} 1.0' in metrics


async def test_concurrent_checks_in_one_pipeline_are_counted_exactly(services: Services) -> None:
    """Checks batched into shared pipelines, from two replicas at once: exactly the limit passes."""
    import asyncio

    from stateless.config import Settings
    from stateless.kit.observe.metrics import Metrics
    from stateless.kit.web.ratelimit import RateLimiter
    from tests.services import unique_name

    settings = Settings(
        _env_file=None, redis_url=services.redis_url, redis_key_prefix=unique_name("rl")
    )
    replicas = [RateLimiter(settings, Metrics()), RateLimiter(settings, Metrics())]
    try:
        outcomes = await asyncio.gather(
            *(
                replicas[i % 2].hit("drafts.create", "tenant-x", {"drafts.create": "20/minute"})
                for i in range(60)
            )
        )
        assert all(o is not None for o in outcomes)
        assert sum(o.allowed for o in outcomes) == 20
        assert sorted(o.remaining for o in outcomes if o.allowed) == list(range(20))
        assert all(0 < o.reset_seconds <= 60 for o in outcomes)
        # another bucket is independent
        other = await replicas[0].hit("drafts.create", "tenant-y", {"drafts.create": "20/minute"})
        assert other is not None and other.allowed and other.remaining == 19
    finally:
        for replica in replicas:
            await replica.close()


async def test_high_limits_counted_in_leases_never_admit_more_than_the_limit(
    services: Services,
) -> None:
    """Two replicas, a limit high enough to be leased (20,000/minute: runs of up to 20 slots),
    25,000 checks at once: at most the limit passes, at most a lease per replica less, and
    Redis is asked far fewer times than there were checks (its counter is the slots reserved)."""
    import asyncio

    from redis.asyncio import Redis

    from stateless.config import Settings
    from stateless.kit.observe.metrics import Metrics
    from stateless.kit.web.ratelimit import RateLimiter, lease_size
    from tests.services import unique_name

    prefix = unique_name("rl")
    settings = Settings(_env_file=None, redis_url=services.redis_url, redis_key_prefix=prefix)
    replicas = [RateLimiter(settings, Metrics()), RateLimiter(settings, Metrics())]
    limit = {"drafts.create": "20000/minute"}
    try:
        outcomes = await asyncio.gather(
            *(replicas[i % 2].hit("drafts.create", "tenant-l", limit) for i in range(25_000))
        )
        assert all(o is not None for o in outcomes)
        admitted = sum(o.allowed for o in outcomes if o is not None)
        assert 20_000 - 2 * lease_size(20_000, 0) <= admitted <= 20_000
        # remaining never goes below zero and counts down to it
        assert min(o.remaining for o in outcomes if o is not None) == 0
        redis = Redis.from_url(services.redis_url)
        try:
            keys = [key async for key in redis.scan_iter(match=f"{prefix}:rl:*")]
            assert len(keys) == 1
            reserved = int(await redis.get(keys[0]) or 0)
        finally:
            await redis.aclose()
        # every check took a slot from a reserved run; no slot was handed out twice
        assert reserved >= admitted
    finally:
        for replica in replicas:
            await replica.close()


def test_lease_sizes_are_exact_for_ordinary_limits_and_near_the_edge() -> None:
    from stateless.kit.web.ratelimit import MAX_LEASE, lease_size

    assert lease_size(600, 0) == 1
    assert lease_size(1999, 0) == 1
    assert lease_size(20_000, 0) == 20
    assert lease_size(100_000_000, 0) == MAX_LEASE
    # close to the limit the runs shrink to single slots
    assert lease_size(20_000, 19_990) == 1
    assert lease_size(20_000, 19_700) == 18
