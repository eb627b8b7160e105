"""Helper scripts (setup, demo, the ComfyUI test/demo harness); a package so tests can import them."""
