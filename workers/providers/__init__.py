"""Model providers: what the model worker calls. One interface, streamed chunks."""
