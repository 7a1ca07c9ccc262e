"""The controller loop, the outcome writer and upkeep."""
