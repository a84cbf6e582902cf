"""The embedded stack: runs the Compose services locally from the same files (`amtp-obs up/down/status`)."""
