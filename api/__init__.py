"""The OpenAI-compatible HTTP API (FastAPI). Stateless: any number of replicas."""
