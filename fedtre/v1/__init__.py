"""fedtre."""
