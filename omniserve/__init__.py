"""omniserve: a self-hosted server for real-time omni-modal assistants."""
__version__ = "0.1.0"
