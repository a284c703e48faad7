"""The state floor: what the hub and its services keep in the state folder and read from the
secrets folder (over core only)."""
