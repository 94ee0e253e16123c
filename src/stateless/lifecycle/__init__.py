"""The data lifecycle engine: TTL policy, cleanup, leadership, scheduling."""
