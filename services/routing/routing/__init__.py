"""Routing service: turns incident records into dispatched, followed-up incidents.

Public surface for other code (the benchmark, the CLI): `RoutingSettings` and
`run_routing`.
"""
