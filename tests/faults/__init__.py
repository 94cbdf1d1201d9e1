"""The fault suite: outages of our own private servers under load (make test-faults)."""
