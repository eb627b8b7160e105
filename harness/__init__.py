"""Driving a real ComfyUI from Python: client.py (any running server, also remote), server.py (a local throw-away
server for tests, demo and replication), graph.py (edit API-format graphs by node type), comfyui_home.py (which
ComfyUI and venv; stdlib only, shell scripts run it as a file), inprocess.py (ComfyUI imported for unit tests)."""
