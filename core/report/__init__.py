"""The report: schema, build from a run, HTML page, plots, template."""
