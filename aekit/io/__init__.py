"""Files: atomic writes and the model file format (safetensors + JSON; no model classes)."""
