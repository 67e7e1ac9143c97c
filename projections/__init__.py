"""Views folded from the event log: pure apply functions, their storage, the worker.

Views are disposable: `rebuild` makes them again from sequence 1.
"""
