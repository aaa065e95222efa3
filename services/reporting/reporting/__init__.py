"""Reporting: rollups, periods, reports of the district IOC (issue 15)."""
