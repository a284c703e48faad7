"""The Docker Swarm backend: user servers as Swarm services, built from the same ServerSpec."""
