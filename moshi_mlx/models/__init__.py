"""Networks: Helium (temporal transformer), depformer, the multi-stream LM, and Mimi."""
