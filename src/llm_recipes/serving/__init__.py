"""Serving behind a guard: transformers' OpenAI-compatible app (`server`), the guard in front of it with the
request log (`guard`), and their recipe (`config`)."""
