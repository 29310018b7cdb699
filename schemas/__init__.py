"""Pydantic models of every message we accept and every proxy response we read."""
