"""What-if autoscaling for SREs: replay a traffic trace through a model of Ray Serve's autoscaler.

Ray Serve's guide says to benchmark a replica and pick ``target_ongoing_requests`` from the
latency objective; this package does that arithmetic for the whole trace instead of one point.

Pure modules (no I/O; ``lint-imports`` enforces it): ``knobs`` (the settings, from a spec),
``policy`` (Ray's default decision rules), ``handle_metrics`` (what the router's handle records
and pushes, and what the controller averages), ``service`` (a replica from its capacity
profile), ``simulate`` (the event loop), ``figures`` (p50/p99, SLO seconds, cost), ``trace`` and
``generate`` (traces), ``profile`` (the capacity profile), ``recommend`` (the knob search) and
``patch`` (the spec patch). Modules with I/O sit beside them: ``prometheus`` (a range query),
``measure`` (profiling a live replica over HTTP) and ``plot`` (the timeline PNG).
"""
