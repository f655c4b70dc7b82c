"""Performance benchmark of the DeepSeek Self-Hosted plugin (issue 8). Entry point: ``bench/run``."""
