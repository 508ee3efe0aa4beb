"""Standards fedtre exports to, as package data (README.md says where each comes from)."""
