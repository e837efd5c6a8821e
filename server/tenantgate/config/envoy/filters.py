"""The listener's HTTP filters and what they are given: the early header strip (and the
trailer strip for an HTTP/2 app), the per-client limit, ext_authz with its timeout, and the
global rate limit with its domain and descriptors."""

from __future__ import annotations

import datetime
import math
from pathlib import Path

import yaml

from tenantgate.config.envoy.generated import generated_imports
from tenantgate.config.envoy.options import (
    AUTHZ_CLUSTER,
    EnvoyConfigError,
    EnvoyOptions,
    duration,
)
from tenantgate.config.model import Config

with generated_imports():
    from envoy_data_plane.envoy.config.common.mutation_rules.v3 import HeaderMutation
    from envoy_data_plane.envoy.config.core.v3 import (
        ApiVersion,
        GrpcService,
        GrpcServiceEnvoyGrpc,
        HeaderValue,
        HeaderValueOption,
        HeaderValueOptionHeaderAppendAction,
        RuntimeFractionalPercent,
        TypedExtensionConfig,
    )
    from envoy_data_plane.envoy.config.ratelimit.v3 import RateLimitServiceConfig
    from envoy_data_plane.envoy.config.route.v3 import (
        RateLimit,
        RateLimitAction,
        RateLimitActionMaskedRemoteAddress,
        RateLimitActionMetaData,
        RateLimitActionMetaDataSource,
        RateLimitActionRequestHeaders,
    )
    from envoy_data_plane.envoy.extensions.common.ratelimit.v3 import (
        LocalRateLimitDescriptor,
        RateLimitDescriptorEntry,
        XRateLimitHeadersRfcVersion,
    )
    from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import ExtAuthz
    from envoy_data_plane.envoy.extensions.filters.http.header_mutation.v3 import (
        HeaderMutation as HeaderMutationFilter,
    )
    from envoy_data_plane.envoy.extensions.filters.http.header_mutation.v3 import (
        Mutations as HeaderMutationFilterMutations,
    )
    from envoy_data_plane.envoy.extensions.filters.http.local_ratelimit.v3 import LocalRateLimit
    from envoy_data_plane.envoy.extensions.filters.http.ratelimit.v3 import (
        RateLimit as RateLimitFilter,
    )
    from envoy_data_plane.envoy.extensions.filters.http.ratelimit.v3 import (
        RateLimitXRateLimitHeadersRfcVersion,
    )
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
        HttpFilter,
    )
    from envoy_data_plane.envoy.extensions.http.early_header_mutation.header_mutation.v3 import (
        HeaderMutation as EarlyHeaderMutation,
    )
    from envoy_data_plane.envoy.type.matcher.v3 import ListStringMatcher, StringMatcher
    from envoy_data_plane.envoy.type.metadata.v3 import MetadataKey, MetadataKeyPathSegment
    from envoy_data_plane.envoy.type.v3 import (
        FractionalPercent,
        FractionalPercentDenominatorType,
        HttpStatus,
        StatusCode,
        TokenBucket,
    )
    from envoy_data_plane.google.protobuf import Any as AnyMessage

EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"  # also the dynamic-metadata namespace
# Headers the client may send to Check besides those Envoy always includes (host, method, path,
# content-length, authorization). Nothing else reaches tenantgate.
CHECK_HEADERS = ("authorization", "content-type", "content-length", "x-request-id")


def rate_limit_domain(config: Config, options: EnvoyOptions) -> str | None:
    """The domain the global rate-limit filter sends, or None when that filter is off.

    tenantgate answers OK to every ShouldRateLimit of a domain its files do not declare (and to
    all of them while quota is disabled): such a filter would limit nothing, so it is refused."""
    if options.rate_limit_domain == "":  # no file may declare it: it was ignored unsaid
        raise EnvoyConfigError("--rate-limit-domain: must not be empty")
    domains = _declared_domains(config)
    enabled = options.rate_limit if options.rate_limit is not None else bool(domains)
    if not enabled:
        if options.rate_limit_domain is not None:
            raise EnvoyConfigError("--rate-limit-domain: the rate-limit filter is off "
                                   "(--no-rate-limit, or no quota.ratelimit_service.config_files "
                                   "with quota enabled)")
        return None
    if options.rate_limit_domain is not None:
        if options.rate_limit_domain not in domains:
            raise EnvoyConfigError(
                f"--rate-limit-domain: {options.rate_limit_domain!r} is not the domain of any "
                f"quota.ratelimit_service.config_files ({', '.join(domains) or 'none'}): "
                f"tenantgate would answer OK to every request")
        return options.rate_limit_domain
    if domains:
        return domains[0]
    raise EnvoyConfigError("the rate-limit filter needs a domain: quota enabled, with "
                           "quota.ratelimit_service.config_files declaring one")


def _declared_domains(config: Config) -> list[str]:
    if not config.quota.enabled:
        return []
    domains = []
    for name in config.quota.ratelimit_service.config_files:
        try:
            domain = (yaml.safe_load(Path(name).read_text(encoding="utf-8")) or {}).get("domain")
        except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError) as exc:
            raise EnvoyConfigError(f"quota.ratelimit_service.config_files: cannot read the "
                                   f"domain from {name}: {exc}") from None
        if isinstance(domain, str) and domain:
            domains.append(domain)
    return domains


DEFAULT_AUTHZ_TIMEOUT = 0.25
# On top of the dependency waits: a Check's own work (signature, policy, gRPC, a busy loop).
AUTHZ_HEADROOM = 0.1


def check_waits(config: Config) -> list[tuple[str, float]]:
    """The timeouts a Check may wait out one after the other: the API-key lookup, then the
    quota store. ShouldRateLimit waits on the quota store alone."""
    waits = []
    if config.api_keys is not None:
        waits.append(("api_keys.redis_timeout", config.api_keys.redis_timeout))
    if config.quota.enabled and config.quota.store == "redis":
        waits.append(("quota.redis.timeout", config.quota.redis.timeout))
    return waits


def authz_timeout_for(config: Config, options: EnvoyOptions) -> float:
    """Envoy's Check and ShouldRateLimit timeout, longer than the Check's dependency waits.

    Were it not, a slow Redis would have Envoy answer 503 (its status_on_error) before
    tenantgate decides, whatever quota.failure_mode says. The default grows with the waits;
    a --authz-timeout that leaves them no room is refused."""
    waits = check_waits(config)
    needed = sum(seconds for _, seconds in waits)
    if options.authz_timeout is None:
        return max(DEFAULT_AUTHZ_TIMEOUT, round(needed + AUTHZ_HEADROOM, 3))
    duration(options.authz_timeout, "--authz-timeout")  # in Envoy's range first
    if waits and options.authz_timeout <= needed:
        spelled = " + ".join(f"{name} {seconds:g} s" for name, seconds in waits)
        if len(waits) > 1:
            spelled += f" = {needed:g} s"
        raise EnvoyConfigError(
            f"--authz-timeout: {options.authz_timeout:g} s is not longer than a Check may wait "
            f"on its dependencies ({spelled}): Envoy would answer 503 before tenantgate "
            f"decides; give more, or lower those timeouts")
    return options.authz_timeout


def early_header_mutation(config: Config) -> TypedExtensionConfig:
    # Runs when the request headers arrive, before route selection and before any HTTP filter,
    # so it removes the client's copies but can never touch what ext_authz adds later (a route's
    # request_headers_to_remove would run after ext_authz and delete tenantgate's headers).
    mutation = EarlyHeaderMutation(mutations=_removals(config))
    return TypedExtensionConfig(name="strip-trusted-headers",
                                typed_config=AnyMessage.pack(mutation))


def trailer_strip_filter(config: Config) -> HttpFilter:
    """The same names removed from the client's request trailers, for an HTTP/2 app.

    Envoy drops request trailers towards an HTTP/1.1 app but forwards them over HTTP/2, and an
    h2c app reading its request fields would find a client's `x-tenant-id` there. The early
    mutation sees headers only; ext_authz adds no trailers, so nothing of tenantgate's is lost."""
    mutation = HeaderMutationFilter(mutations=HeaderMutationFilterMutations(
        request_trailers_mutations=_removals(config)))
    return HttpFilter(name="envoy.filters.http.header_mutation",
                      typed_config=AnyMessage.pack(mutation))


def _removals(config: Config) -> list[HeaderMutation]:
    return [HeaderMutation(remove=name) for name in config.context.stripped_headers]


# Envoy refills a local token bucket no more often than this.
MIN_FILL_INTERVAL_SECONDS = 0.05
# Client addresses with a bucket of their own (Envoy's default is 20): past it, the least
# recently seen address loses its bucket and starts afresh when it comes back.
DEFAULT_CLIENT_ADDRESSES = 10_000
_EVERY_REQUEST = RuntimeFractionalPercent(default_value=FractionalPercent(
    numerator=100, denominator=FractionalPercentDenominatorType.HUNDRED))


def client_limit_filter(options: EnvoyOptions) -> HttpFilter | None:
    """Front mode: one token bucket per client address, spent before ext_authz runs.

    Verifying a token is the costliest thing a Check does, and a client sending a fresh forgery
    with every request makes tenantgate do it each time (the rejected-token cache only answers
    replays). Envoy refuses such a client here, in C++, before it costs a Check."""
    rate, addresses = options.client_limit, options.client_limit_addresses
    if rate is None:
        if addresses is not None:  # it would be dropped without a word
            raise EnvoyConfigError("--client-limit-addresses: needs --client-limit")
        return None
    if options.mode != "front":
        raise EnvoyConfigError("--client-limit: front mode only; in sidecar mode the client "
                               "address is the mesh's gateway or neighbour proxy, so one bucket "
                               "would hold every client's requests")
    if rate.period < MIN_FILL_INTERVAL_SECONDS:
        raise EnvoyConfigError(f"--client-limit: Envoy refills a bucket at most every "
                               f"{MIN_FILL_INTERVAL_SECONDS * 1000:g} ms, got {rate.text!r}")
    addresses = DEFAULT_CLIENT_ADDRESSES if addresses is None else addresses
    if not 1 <= addresses <= 2**32 - 1:  # a UInt32Value in Envoy's API
        raise EnvoyConfigError(f"--client-limit-addresses: must be from 1 to {2**32 - 1}, got "
                               f"{addresses}")
    bucket = TokenBucket(max_tokens=rate.count, tokens_per_fill=rate.count,
                         fill_interval=datetime.timedelta(seconds=rate.period))
    limiter = LocalRateLimit(
        stat_prefix="client_limit",
        filter_enabled=_EVERY_REQUEST, filter_enforced=_EVERY_REQUEST,
        # An entry without a value is a wildcard: each client address gets its own bucket. An
        # IPv6 client counts by its /64, what one subscriber usually holds: one per /128 and
        # a client could take a fresh bucket for every request.
        descriptors=[LocalRateLimitDescriptor(
            entries=[RateLimitDescriptorEntry(key="masked_remote_address")], token_bucket=bucket)],
        rate_limits=[RateLimit(actions=[RateLimitAction(
            masked_remote_address=RateLimitActionMaskedRemoteAddress(
                v4_prefix_mask_len=32, v6_prefix_mask_len=64))])],
        max_dynamic_descriptors=addresses,
        enable_x_ratelimit_headers=XRateLimitHeadersRfcVersion.DRAFT_VERSION_03,
        # x-ratelimit-reset is added after these headers are formatted, so Retry-After cannot
        # copy it as the global filter's does: the refill interval is the longest wait.
        response_headers_to_add=[_retry_after(str(math.ceil(rate.period)))])
    return HttpFilter(name="envoy.filters.http.local_ratelimit",
                      typed_config=AnyMessage.pack(limiter))


def ext_authz_filter(config: Config, timeout: datetime.timedelta) -> HttpFilter:
    headers = dict.fromkeys((*CHECK_HEADERS, config.credentials.api_key_header))
    authz = ExtAuthz(
        grpc_service=GrpcService(envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=AUTHZ_CLUSTER),
                                 timeout=timeout),
        transport_api_version=ApiVersion.V3,
        # Fail closed: when tenantgate cannot answer, Envoy answers 503 and never passes the
        # request through unauthenticated.
        failure_mode_allow=False,
        status_on_error=HttpStatus(code=StatusCode.ServiceUnavailable),
        # The plain string map: Envoy joins a repeated header with "," in the raw map too, so
        # the raw map shows tenantgate nothing more, and the plain map is cheaper to read.
        encode_raw_headers=False,
        allowed_headers=ListStringMatcher(patterns=[StringMatcher(exact=h) for h in headers]),
    )
    return HttpFilter(name=EXT_AUTHZ_FILTER, typed_config=AnyMessage.pack(authz))


def _retry_after(seconds: str = "%RESP(x-ratelimit-reset)%") -> HeaderValueOption:
    """A 429 says when to come back (RFC 6585); by default the seconds until the limiting
    window resets, which the global rate-limit filter has just put in x-ratelimit-reset."""
    return HeaderValueOption(
        header=HeaderValue(key="retry-after", value=seconds),
        append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD)


def rate_limit_filter(config: Config, domain: str, timeout: datetime.timedelta) -> HttpFilter:
    service = RateLimitServiceConfig(
        grpc_service=GrpcService(envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=AUTHZ_CLUSTER),
                                 timeout=timeout),
        transport_api_version=ApiVersion.V3)
    limiter = RateLimitFilter(
        domain=domain, timeout=timeout,
        # ShouldRateLimit answers UNAVAILABLE when its store fails, leaving the choice to Envoy:
        # follow the config's quota.failure_mode (only `open` lets the request through).
        failure_mode_deny=config.quota.failure_mode != "open",
        status_on_error=HttpStatus(code=StatusCode.ServiceUnavailable),
        enable_x_ratelimit_headers=RateLimitXRateLimitHeadersRfcVersion.DRAFT_VERSION_03,
        response_headers_to_add=[_retry_after()],
        rate_limit_service=service)
    return HttpFilter(name="envoy.filters.http.ratelimit", typed_config=AnyMessage.pack(limiter))


def rate_limit_descriptors() -> list[RateLimit]:
    """[tenant] and [tenant, method]: tenant from ext_authz's dynamic metadata. A request
    without a tenant (denied before) produces no descriptor."""
    tenant = RateLimitAction(metadata=RateLimitActionMetaData(
        descriptor_key="tenant", source=RateLimitActionMetaDataSource.DYNAMIC,
        metadata_key=MetadataKey(key=EXT_AUTHZ_FILTER,
                                 path=[MetadataKeyPathSegment(key="tenant")])))
    method = RateLimitAction(request_headers=RateLimitActionRequestHeaders(
        header_name=":method", descriptor_key="method"))
    return [RateLimit(actions=[tenant]), RateLimit(actions=[tenant, method])]
