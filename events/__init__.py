"""The event log: event schemas, subjects, and the append/read API over JetStream.

Everything else depends on this package; it depends on nothing of ours.
"""
