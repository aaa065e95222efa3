"""Plumbing shared by the services: no business rules live here."""
