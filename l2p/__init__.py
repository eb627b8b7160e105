"""The L2P method in plain torch (no ComfyUI import): Detailer Heads, checkpoint layouts, configuration."""
