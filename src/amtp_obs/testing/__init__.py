"""Real test peers for tests, demos and debugging: an OTLP sink, fake LLM vendors, headless Chromium."""
