"""Shared by every tier. The SDK patches the whole process with gevent when imported; only the
catalogue tier may import it (scripts/test runs each tier in its own process)."""
