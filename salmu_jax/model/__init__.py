"""The Flax CLIP model and its sharding rules."""
