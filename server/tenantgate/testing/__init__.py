"""Helpers for testing tenantgate setups: token minting, JWKS servers, throwaway real servers."""
