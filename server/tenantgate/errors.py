"""The exceptions that cross modules: the tree below; module-local ones are listed after it.

    TenantgateError
    ├── ConfigError(issues)          start-up, reload, check-config; never at request time
    └── DependencyError              a dependency we could not use in time
        ├── QuotaStoreUnavailable    Redis timeout, connection refused
        ├── KeySetUnavailable        JWKS unreachable and no usable cached key
        └── ApiKeyStoreUnavailable   the API-key store (Redis) could not answer a lookup

Denials are values (`decision.Deny`), not exceptions. Anything else raised during a Check
is a bug: it becomes gRPC INTERNAL and `tenantgate_internal_errors_total`.

Errors raised and handled close to home live in their own modules, outside this tree:
`app.StartupError` (a listener could not start; from `admin.server.AdminListenFailed`,
`health_listener.HealthListenFailed`, `unix_socket.SocketInUse`), `identity.jwks.FetchFailed`
(one JWKS fetch; becomes KeySetUnavailable), `identity.apikey_store.UnreadableKeyRecord`,
`identity.apikey_manager.KeyAdminError` (a refused admin request), `context.InvalidContext`,
`config.files.UnfitFile` (a file config will not read), `config.envoy.options.EnvoyConfigError`,
`quota.pipe.HandshakeRefused`, `db.schema.InstallRefused`, and the CLI's and
`tenantgate.testing`'s own.
"""

from __future__ import annotations


class TenantgateError(Exception):
    """Base of every error tenantgate raises on purpose."""


class ConfigError(TenantgateError):
    """A configuration that cannot be used; `issues` are `key.path: message` lines."""

    def __init__(self, issues: list[str]) -> None:
        self.issues = issues
        super().__init__("\n".join(issues))


class DependencyError(TenantgateError):
    """A dependency (Redis, a JWKS endpoint) we could not use in time."""


class QuotaStoreUnavailable(DependencyError):
    """The quota store timed out, refused the connection or its circuit is open."""


class KeySetUnavailable(DependencyError):
    """An issuer's JWKS is unreachable and no usable cached key is left."""


class ApiKeyStoreUnavailable(DependencyError):
    """The API-key store could not answer a lookup the local cache could not serve."""
