"""Service infrastructure shared by the API and the workers.

Settings, database, job store, job resource, artifact store, queue, logging, network guard,
migrations. The workers import this package, never :mod:`app.web`.
"""
