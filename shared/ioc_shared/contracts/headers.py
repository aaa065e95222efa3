"""Header names of the bus contract (a module of its own: importing it costs nothing)."""

from __future__ import annotations

H_EVENT_ID = "ioc-event-id"
H_EVENT_TYPE = "ioc-event-type"
H_PRINCIPAL = "ioc-principal"      # who signs (set by the sender, verified by signature)
H_SIGNATURE = "ioc-signature"      # hex HMAC-SHA256 of the value with the principal's secret
# The service that produced a message, on every message a service publishes. A canonical
# record must say `ingest` (the broker ACL, where only ingest WRITEs ioc.data.*, enforces it).
H_PRODUCER = "ioc-producer"
