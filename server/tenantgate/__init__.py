"""tenantgate: tenant isolation for Envoy (ext_authz, rate limit, signed tenant context)."""

__version__ = "0.1.0"
