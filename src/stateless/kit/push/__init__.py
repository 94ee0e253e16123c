"""Outbound delivery: the HTTP/2 client, the shared push orchestration, the one retry mechanism."""
