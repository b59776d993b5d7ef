"""Shared building blocks: transformer (attention, RoPE, MLPs, norms, layer scale), kv caches,
streaming convolutions. Used by both the LM and Mimi."""
