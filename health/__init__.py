"""Health checks for real servers (userlb.health): probes, pure policy, runner."""
