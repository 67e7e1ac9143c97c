"""Asynchronous workers that act on the log (the model worker for responses lives here)."""
