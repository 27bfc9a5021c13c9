"""Canary metric providers: a direct scrape of the app's ``/metrics``, or a Prometheus query."""
