"""The HTTP edge: middleware, dispatch and the fast route, problem+json errors and their pages, OpenAPI and docs, rate limits."""
