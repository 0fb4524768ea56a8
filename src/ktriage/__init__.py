"""ktriage: kernel telemetry for high-signal threat triage, forensics and malware analysis."""

__version__ = "0.1.0"
