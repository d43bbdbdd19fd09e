"""The FastAPI front end: routes, request checks, problem+json, OpenAPI, metrics."""
