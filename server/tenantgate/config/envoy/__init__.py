"""The Envoy bootstrap that matches a tenantgate config: the names the CLI, the tests and the
benchmarks use, re-exported from the modules that own them."""

from tenantgate.config.envoy.bootstrap import (
    EnvoyConfigError,
    EnvoyOptions,
    Mode,
    Rendered,
    bootstrap_dict,
    build_bootstrap,
    render,
    render_files,
)

__all__ = [
    "EnvoyConfigError",
    "EnvoyOptions",
    "Mode",
    "Rendered",
    "bootstrap_dict",
    "build_bootstrap",
    "render",
    "render_files",
]
