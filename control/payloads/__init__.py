"""Pydantic payloads that cross the API / workflow / activity boundaries (one model in, one model out), per stage."""
