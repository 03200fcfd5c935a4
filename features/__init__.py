"""features: the event contract, the journey simulator and point-in-time behaviour vectors."""
