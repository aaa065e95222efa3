"""Contracts and plumbing shared by the IOC services.

`ioc_shared.contracts` is the bus contract (envelope, topics, event payloads);
`ioc_shared.platform` is plumbing only (settings, logging, telemetry, database,
Kafka); `ioc_shared.registry` is the organisation registry (units, datasets,
sharing grants) loaded from operator-edited configuration.
"""
