"""The zoo format: export and load separators (weights in safetensors + a JSON description)."""
