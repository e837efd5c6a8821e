"""The admin gRPC API (API keys, usage) on its own authenticated listener."""
