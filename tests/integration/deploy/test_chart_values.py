"""Wrong values are refused before anything is rendered, with a message naming the key."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import CHART, Rendered, run_helm
from pydantic import BaseModel
from tenantgate.app import SERVICES
from tenantgate.config.model import Config

REDIS_QUOTA = {"enabled": True, "store": "redis", "redis": {"url": "redis://redis:6379/0"}}
# (values, a line Helm must print): each names the key and says what is wrong.
REJECTED = [
    pytest.param({"mode": "sidecars"},
                 '- mode: mode must be one of the following: "standalone", "sidecar"',
                 id="unknown-mode"),
    pytest.param({"issuer": [{"name": "x"}]},
                 "- (root): Additional property issuer is not allowed", id="misspelt-top-key"),
    # A specific address is no address of every pod; loopback leaves the probes out.
    pytest.param({"listenHost": "::1"},
                 '- listenHost: listenHost must be one of the following: "0.0.0.0", "::", "[::]"',
                 id="listen-host-not-every-address"),
    pytest.param({"ports": {"grpc": 70000}},
                 "- ports.grpc: Must be less than or equal to 65535", id="port-out-of-range"),
    pytest.param({"issuers": [{"name": "idp", "issuer": "https://idp/"}]},
                 "- issuers.0: audiences is required", id="issuer-without-audiences"),
    pytest.param({"issuers": [{"name": "idp", "issuer": "i", "audiences": ["a"],
                               "algorithms": ["none"]}]},
                 "- issuers.0.algorithms.0: issuers.0.algorithms.0 must be one of the following",
                 id="alg-none"),
    pytest.param({"issuers": [{"name": "idp", "issuer": "i", "audiences": ["a"],
                               "hs_secret": "plain-text-secret"}]},
                 "- issuers.0.hs_secret: Invalid type. Expected: object, given: string",
                 id="secret-written-inline"),
    # A single JWK where a JWK Set belongs: serve refuses it, so the pod would crash-loop.
    pytest.param({"issuers": [{"name": "idp", "issuer": "i", "audiences": ["a"],
                               "tenants": ["acme"],
                               "jwks": {"inline": {"kty": "EC", "kid": "k1"}}}]},
                 "- issuers.0.jwks.inline: keys is required", id="inline-jwk-not-a-set"),
    pytest.param({"listen": {"grpc": "0.0.0.0:1"}},
                 "- listen: Additional property grpc is not allowed", id="listen-set-by-chart"),
    pytest.param({"context": {"active_key": "k1", "keys": []}},
                 "- context: Additional property keys is not allowed", id="keys-not-in-values"),
    pytest.param({"quota": {"plans": {"free": {"limits": ["10 per second"]}}}},
                 "- quota.plans.free.limits.0: Does not match pattern", id="bad-rate"),
    pytest.param({"quota": {"plans": {"free": {"limits": [{"burst": 5}]}}}},
                 "- quota.plans.free.limits.0: rate is required", id="limit-without-rate"),
    pytest.param({"quota": {"store": "mongodb"}},
                 '- quota.store: quota.store must be one of the following: "memory", "redis"',
                 id="unknown-store"),
    pytest.param({"quota": {"redis": {"url": "http://redis:6379"}}},
                 "- quota.redis.url: Does not match pattern", id="redis-url-scheme"),
    pytest.param({"quota": {"failure_mode": "sometimes"}},
                 "- quota.failure_mode: quota.failure_mode must be one of the following",
                 id="unknown-failure-mode"),
    pytest.param({"signingKeys": {"existingSecret": "keys", "keyIds": []}},
                 "- signingKeys.keyIds: Array must have at least 1 items", id="no-key-ids"),
    pytest.param({"signingKeys": {"existingSecret": "Keys_Secret", "keyIds": ["k1"]}},
                 "- signingKeys.existingSecret: Does not match pattern", id="bad-secret-name"),
    pytest.param({"secretEnv": [{"name": "X"}]},
                 "- secretEnv.0: secretName is required", id="secret-env-incomplete"),
    pytest.param({"api_keys": {"redis_url": "redis://r:6379/1"}},
                 "- api_keys: hash_secret is required", id="api-keys-without-hash-secret"),
    pytest.param({"context": {"ttl": "one minute"}},
                 "- context.ttl: Does not match pattern", id="bad-duration"),
    pytest.param({"sidecar": {"envoy": {"logLevel": "verbose"}}},
                 "- sidecar.envoy.logLevel: sidecar.envoy.logLevel must be one of the following",
                 id="envoy-log-level"),
    pytest.param({"metrics": {"prometheusRule": {"authFailureRatio": 5}}},
                 "- metrics.prometheusRule.authFailureRatio: Must be less than or equal to 1",
                 id="ratio-above-one"),
    pytest.param({"metrics": {"prometheusRule": {"checkLatencyP99Seconds": 10}}},
                 "- metrics.prometheusRule.checkLatencyP99Seconds: Must be less than 10",
                 id="latency-threshold-at-the-top-bucket"),
    pytest.param({"image": {"repository": "tenantgate", "digest": "latest"}},
                 "- image.digest: Does not match pattern", id="digest-not-sha256"),
    pytest.param({"probes": {"service": "tenantgate"}},
                 '- probes.service: probes.service must be one of the following: "", '
                 '"envoy.service.auth.v3.Authorization", '
                 '"envoy.service.ratelimit.v3.RateLimitService"',
                 id="probe-service-not-registered"),
    # Cross-field rules the schema cannot express come from the chart's own checks.
    pytest.param({"context": {"active_key": "k9"}},
                 'context.active_key: "k9" is not one of signingKeys.keyIds [k1]',
                 id="active-key-unknown"),
    pytest.param({"mode": "sidecar"},
                 "sidecar.app.image: sidecar mode needs the application's image",
                 id="sidecar-without-app"),
    # Every port the pod listens on must be distinct: its containers share one network namespace.
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1", "port": 8000}}},
                 "sidecar.envoy.port: must differ from sidecar.app.port, both 8000",
                 id="port-clash"),
    pytest.param({"ports": {"grpc": 9001, "metrics": 9001}},
                 "ports.metrics: must differ from ports.grpc, both 9001", id="metrics-port-clash"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1"}, "envoy": {"port": 9090}}},
                 "sidecar.envoy.port: must differ from ports.metrics, both 9090",
                 id="envoy-on-metrics-port"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1"}, "envoy": {"port": 9001}}},
                 "sidecar.envoy.port: must differ from ports.grpc, both 9001",
                 id="envoy-on-grpc-port"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1", "port": 9001}}},
                 "sidecar.app.port: must differ from ports.grpc, both 9001", id="app-on-grpc-port"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1", "port": 9090}}},
                 "sidecar.app.port: must differ from ports.metrics, both 9090",
                 id="app-on-metrics-port"),
    # Envoy's admin is a unix socket (test_chart_render.py), unless envoyConfigArgs moves it.
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1"},
                                                 "envoyConfigArgs": ["--admin", "127.0.0.1:8000"]}},
                 'sidecar.envoy.port: must differ from sidecar.envoyConfigArgs --admin '
                 '"127.0.0.1:8000", both 8000', id="envoy-admin-moved-onto-envoy"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1", "port": 7000},
                                                 "envoyConfigArgs": ["--admin=127.0.0.1:7000"]}},
                 'sidecar.app.port: must differ from sidecar.envoyConfigArgs --admin '
                 '"127.0.0.1:7000", both 7000', id="envoy-admin-moved-onto-app"),
    # /tmp is a 16Mi in-memory emptyDir without rotation: an audit file there gets the pod evicted.
    pytest.param({"audit": {"path": "/tmp/audit.jsonl"}},
                 'audit.path: "/tmp/audit.jsonl" is in /tmp, a 16Mi in-memory emptyDir',
                 id="audit-file-in-tmp"),
    pytest.param({"audit": {"path": "//tmp/./audit.jsonl"}},
                 'audit.path: "/tmp/audit.jsonl" is in /tmp', id="audit-file-in-tmp-uncleaned"),
    # tenantgate reads a relative path from the config file's directory: the read-only ConfigMap.
    pytest.param({"audit": {"path": "audit.jsonl"}},
                 'audit.path: "audit.jsonl" is relative', id="audit-file-relative"),
    pytest.param({"audit": {"path": "./logs/../audit.jsonl"}},
                 'audit.path: "audit.jsonl" is relative', id="audit-file-relative-uncleaned"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1"}},
                  "audit": {"path": "/run/tenantgate/audit.jsonl"}},
                 'audit.path: "/run/tenantgate/audit.jsonl" is in sidecar.socketDir '
                 '/run/tenantgate, a 1Mi in-memory emptyDir', id="audit-file-in-socket-dir"),
    pytest.param({"audit": {"path": "/etc/tenantgate/audit.jsonl"}},
                 'audit.path: "/etc/tenantgate/audit.jsonl" is in /etc/tenantgate, the read-only',
                 id="audit-file-in-config-dir"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1"}, "socketDir": "/tmp"}},
                 'sidecar.socketDir: "/tmp" overlaps /tmp', id="socket-dir-on-tmp"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1"}, "socketDir": "/etc"}},
                 'sidecar.socketDir: "/etc" overlaps /etc/tenantgate',
                 id="socket-dir-above-config"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1"},
                                                 "socketDir": "/etc/envoy/run"}},
                 'sidecar.socketDir: "/etc/envoy/run" overlaps /etc/envoy',
                 id="socket-dir-in-envoy-bootstrap"),
    # null removes the key: it was read as 0, "minReplicas: 2 is above maxReplicas 0".
    pytest.param({"autoscaling": {"maxReplicas": None}},
                 "autoscaling.maxReplicas: not set, and autoscaling.enabled is true: the "
                 "HorizontalPodAutoscaler needs the most pods it may run. Set it, or "
                 "autoscaling.enabled: false with replicaCount", id="max-replicas-null"),
    pytest.param({"autoscaling": {"minReplicas": 5, "maxReplicas": 3}},
                 "autoscaling.minReplicas: 5 is above autoscaling.maxReplicas 3",
                 id="autoscaling-min-above-max"),
    # Kubernetes kills the pod once the grace period ends: before its drain could finish.
    pytest.param({"listen": {"drain_timeout": "60s", "shutdown_delay": "20s"}},
                 "terminationGracePeriodSeconds: 30 must be longer than preStopSleepSeconds + "
                 "listen.shutdown_delay + listen.drain_timeout (85s)", id="grace-below-drain"),
    pytest.param({"listen": {"drain_timeout": 25}},
                 "terminationGracePeriodSeconds: 30 must be longer than preStopSleepSeconds + "
                 "listen.shutdown_delay + listen.drain_timeout (30s)", id="grace-equal-to-drain"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1"}},
                  "listen": {"drain_timeout": "1m"}},
                 "terminationGracePeriodSeconds: 30 must be longer than preStopSleepSeconds + "
                 "listen.shutdown_delay + listen.drain_timeout (65s)",
                 id="grace-below-drain-sidecar"),
    # The app's preStop comes first; Kubernetes stops the sidecars only after the app has.
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1"}},
                  "listen": {"drain_timeout": "25s"}},
                 "terminationGracePeriodSeconds: 30 must be longer than preStopSleepSeconds + "
                 "listen.shutdown_delay + listen.drain_timeout (30s)",
                 id="grace-below-app-prestop-and-drain-sidecar"),
    pytest.param({"mode": "sidecar", "listen": {"drain_timeout": "1m"}, "sidecar": {"app": {
                  "image": "a:1", "lifecycle": {"preStop": {"exec": {"command": ["x"]}}}}}},
                 "terminationGracePeriodSeconds: 30 must be longer than listen.shutdown_delay + "
                 "listen.drain_timeout (60s)", id="grace-below-drain-sidecar-own-lifecycle"),
    # Helm holds a YAML number as a float, which toString writes as 1e+06: read as 1 s, it passed.
    pytest.param({"listen": {"drain_timeout": 1000000}},
                 "listen.drain_timeout (1000005s)", id="grace-below-a-large-number"),
    # The config is rendered into a ConfigMap: a password there is readable by far more people.
    pytest.param({"quota": {"store": "redis", "redis": {"url": "redis://:s3cret@redis:6379/0"}}},
                 "quota.redis.url: holds a password", id="redis-password-in-url"),
    pytest.param({"quota": {"store": "redis",
                            "redis": {"url": "redis://redis:6379/0?password=s3cret"}}},
                 "quota.redis.url: holds a password", id="redis-password-in-query"),
    pytest.param({"api_keys": {"redis_url": "rediss://user:s3cret@redis:6379/1",
                               "hash_secret": {"fromEnv": "H"}}},
                 "api_keys.redis_url: holds a password, and the chart writes the config into a "
                 "ConfigMap. Move it to api_keys.redis_password",
                 id="apikeys-redis-password-in-url"),
    # The memory store counts in each pod apart: two pods would admit twice every limit.
    pytest.param({"quota": {"enabled": True}},
                 "quota.store: memory (the default) counts in each pod apart, and "
                 "autoscaling.maxReplicas is 10: every tenant would get that many times its "
                 "limits. Set quota.store: redis with quota.redis.url, or run one pod "
                 "(autoscaling.enabled: false, replicaCount: 1)", id="memory-quota-autoscaled"),
    pytest.param({"quota": {"enabled": True, "store": "memory"},
                  "autoscaling": {"enabled": False}, "replicaCount": 3},
                 "quota.store: memory (the default) counts in each pod apart, and replicaCount "
                 "is 3", id="memory-quota-replicas"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1"}},
                  "quota": {"enabled": True}},
                 "quota.store: memory (the default) counts in each pod apart, and "
                 "sidecar.app.replicas is 2: every tenant would get that many times its limits. "
                 "Set quota.store: redis with quota.redis.url, or run one pod "
                 "(sidecar.app.replicas: 1)", id="memory-quota-sidecar-replicas"),
    # Degraded mode gives each pod limit / quota.replicas while Redis fails: with autoscaling
    # 2..10 and replicas 2, an outage admitted up to 5 times every limit.
    pytest.param({"quota": {**REDIS_QUOTA, "failure_mode": "degraded", "replicas": 2}},
                 "quota.replicas: 2, but autoscaling.maxReplicas is 10: quota.failure_mode "
                 "degraded gives each pod limit / quota.replicas while the store fails, so 10 "
                 "pods would admit 5 times every limit. Set quota.replicas: 10 (the most pods "
                 "that can run)", id="degraded-replicas-below-max-replicas"),
    pytest.param({"quota": {**REDIS_QUOTA, "failure_mode": "degraded"}},
                 "quota.replicas: not set, and quota.failure_mode degraded needs it: each pod "
                 "enforces limit / quota.replicas while the store fails. Set quota.replicas: 10 "
                 "(autoscaling.maxReplicas, the most pods that can run)",
                 id="degraded-without-replicas"),
    pytest.param({"quota": {**REDIS_QUOTA, "replicas": 3,
                            "plans": {"pro": {"limits": ["1/s"], "failure_mode": "degraded"}}},
                  "autoscaling": {"enabled": False}, "replicaCount": 4},
                 "quota.replicas: 3, but replicaCount is 4: quota.plans.pro.failure_mode "
                 "degraded gives each pod limit / quota.replicas while the store fails, so 4 pods "
                 "would admit 1.33 times every limit", id="degraded-plan-replicas-below-count"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1", "replicas": 3}},
                  "quota": {**REDIS_QUOTA, "replicas": 1},
                  "tenants": {"registry": {"acme": {"overrides": {"failure_mode": "degraded"}}}}},
                 "quota.replicas: 1, but sidecar.app.replicas is 3: "
                 "tenants.registry.acme.overrides.failure_mode degraded",
                 id="degraded-override-replicas-below-sidecar-replicas"),
    # The in-process store never fails: tenantgate refuses degraded there, so the pod would not
    # start.
    pytest.param({"quota": {"enabled": True, "failure_mode": "degraded", "replicas": 1},
                  "autoscaling": {"enabled": False}, "replicaCount": 1},
                 "quota.failure_mode: degraded, but quota.store is memory (the default), which "
                 "runs in the pod and never fails", id="degraded-on-memory-store"),
    # tenantgate refuses quota.replicas above 1 with the memory store: the chart rendered it
    # with one pod, and the pod crash-looped.
    pytest.param({"quota": {"enabled": True, "replicas": 2},
                  "autoscaling": {"enabled": False}, "replicaCount": 1},
                 "quota.replicas: 2 says 2 processes share the quota, but quota.store is memory "
                 "(the default), which counts in each process apart (they would give every "
                 "tenant 2 times its limits), and tenantgate refuses the config. Set "
                 "quota.store: redis with quota.redis.url, or quota.replicas: 1 with one pod",
                 id="memory-quota-replicas-above-one"),
    # With the app in the user's own chart the pod count is unknown, but tenantgate still needs
    # quota.replicas for degraded: the chart rendered it and the pods crash-looped.
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"enabled": False}},
                  "quota": {**REDIS_QUOTA, "failure_mode": "degraded"}},
                 "quota.replicas: not set, and quota.failure_mode degraded needs it: each pod "
                 "enforces limit / quota.replicas while the store fails. Set quota.replicas to "
                 "the most pods that can run (your chart sets the pod count)",
                 id="degraded-without-replicas-app-elsewhere"),
    # The root filesystem is read-only; tenantgate reads a relative socket path from the
    # ConfigMap's directory: the admin socket would fail serve, a crash loop.
    pytest.param({"admin": {"listen": "unix:admin.sock", "token": {"fromEnv": "T"}}},
                 'admin.listen: "unix:admin.sock" is relative, so tenantgate would create the '
                 "socket in /etc/tenantgate, a read-only ConfigMap, and fail to start. Put it in "
                 "/tmp (an emptyDir of the pod, e.g. unix:/tmp/admin.sock) or a writable volume "
                 "from extraVolumes and extraVolumeMounts", id="admin-socket-relative"),
    pytest.param({"admin": {"listen": "unix:/run/tenantgate/admin.sock",
                            "token": {"fromEnv": "T"}}},
                 'admin.listen: "unix:/run/tenantgate/admin.sock" is in /run/tenantgate, on the '
                 "read-only root filesystem", id="admin-socket-in-socket-dir-standalone"),
    pytest.param({"admin": {"listen": "unix:///etc/tenantgate/a.sock", "token": {"fromEnv": "T"}}},
                 'admin.listen: "unix:///etc/tenantgate/a.sock" is in /etc/tenantgate, the '
                 "read-only ConfigMap", id="admin-socket-in-config-dir"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1", "replicas": 1}},
                  "admin": {"listen": "unix:/var/run/a.sock", "token": {"fromEnv": "T"}}},
                 "Put it in /tmp (an emptyDir of the pod, e.g. unix:/tmp/admin.sock), "
                 "sidecar.socketDir /run/tenantgate or a writable volume",
                 id="admin-socket-on-root-fs-sidecar"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1", "replicas": 1}},
                  "admin": {"listen": "unix:/run/tenantgate/envoy-admin.sock",
                            "token": {"fromEnv": "T"}}},
                 'admin.listen: "unix:/run/tenantgate/envoy-admin.sock" is '
                 "/run/tenantgate/envoy-admin.sock, a socket the sidecars use",
                 id="admin-socket-on-envoys-admin"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1"},
                                                 "socketDir": "/run/" + "x" * 90}},
                 "is too long: Envoy's admin socket /run/" + "x" * 90 + "/envoy-admin.sock "
                 "would be 112 bytes, and a Unix socket path holds at most 107",
                 id="socket-dir-too-long-for-envoys-admin"),
    # The NetworkPolicy admits the gRPC and metrics ports only: an admin API on the pod address
    # (with TLS) rendered fine and could never be reached.
    pytest.param({"admin": {"listen": "0.0.0.0:9002", "token": {"fromEnv": "T"},
                            "tls": {"cert": "/tls/tls.crt", "key": "/tls/tls.key"}}},
                 'admin.listen: "0.0.0.0:9002" is not loopback, and the chart\'s NetworkPolicy '
                 "admits only the gRPC and metrics ports, so nothing could reach it. Listen on "
                 "127.0.0.1:PORT and use kubectl port-forward", id="admin-on-pod-address"),
    pytest.param({"admin": {"listen": "127.0.0.1:9090", "token": {"fromEnv": "ADMIN_TOKEN"}}},
                 'admin.listen "127.0.0.1:9090": must differ from ports.metrics, both 9090',
                 id="admin-api-on-metrics-port"),
    # tls and ports.health (test_chart_tls.py renders what they accept)
    pytest.param({"tls": {"enabled": True}},
                 "tls.existingSecret: name the Secret holding the certificate (tls.crt, tls.key, "
                 "and ca.crt with tls.clientAuth)", id="tls-without-secret"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1"}},
                  "tls": {"enabled": True, "existingSecret": "tg-tls"}},
                 "tls.enabled: sidecar mode's Envoy calls tenantgate over the Unix socket "
                 "listen.uds", id="tls-in-sidecar-mode"),
    pytest.param({"tls": {"enabled": True, "existingSecret": "TLS_Secret"}},
                 "- tls.existingSecret: Does not match pattern", id="tls-bad-secret-name"),
    pytest.param({"tls": {"enabled": "yes"}},
                 "- tls.enabled: Invalid type. Expected: boolean, given: string",
                 id="tls-enabled-not-a-switch"),
    pytest.param({"tls": {"enabled": True, "existingSecret": "tg-tls", "caSecret": "x"}},
                 "- tls: Additional property caSecret is not allowed", id="unknown-tls-key"),
    pytest.param({"ports": {"health": 0}},
                 "- ports.health: Must be greater than or equal to 1", id="health-port-zero"),
    pytest.param({"tls": {"enabled": True, "existingSecret": "tg-tls"},
                  "ports": {"health": 9001}},
                 "ports.health: must differ from ports.grpc, both 9001", id="health-on-grpc"),
    pytest.param({"tls": {"enabled": True, "existingSecret": "tg-tls"},
                  "ports": {"health": 9090}},
                 "ports.health: must differ from ports.metrics, both 9090",
                 id="health-on-metrics"),
    pytest.param({"tls": {"enabled": True, "existingSecret": "tg-tls"},
                  "admin": {"listen": "127.0.0.1:9003", "token": {"fromEnv": "T"}}},
                 'admin.listen "127.0.0.1:9003": must differ from ports.health, both 9003',
                 id="admin-on-health"),
    # The chart sets both from tls and ports: written in listen, they would be overwritten.
    pytest.param({"listen": {"health": "0.0.0.0:9003"}},
                 "- listen: Additional property health is not allowed", id="listen-health"),
    pytest.param({"listen": {"tls": {"cert": "a", "key": "b"}}},
                 "- listen: Additional property tls is not allowed", id="listen-tls"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1"},
                                                 "envoy": {"upstreamProtocol": "h2c"}}},
                 'sidecar.envoy.upstreamProtocol must be one of the following: "http1", '
                 '"http2", "downstream"', id="upstream-protocol-unknown"),
    pytest.param({"mode": "sidecar", "sidecar": {"app": {"image": "a:1"},
                                                 "envoy": {"websocket": "yes"}}},
                 "- sidecar.envoy.websocket: Invalid type. Expected: boolean, given: string",
                 id="websocket-not-boolean"),
]


@pytest.mark.parametrize(("values", "message"), REJECTED)
def test_wrong_values_are_refused_with_a_readable_message(
        render_error: Callable[..., str], tmp_path: Path, values: dict[str, Any],
        message: str) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    error = render_error(str(values_file))
    assert message in error
    assert "goroutine" not in error and "panic" not in error


def test_the_grace_period_is_not_checked_where_the_chart_renders_no_pod(
        render: Callable[..., Rendered]) -> None:
    # Sidecar mode without sidecar.app: the user's own chart sets its pods' grace period.
    rendered = render("sidecar-memory.yaml", sets={"sidecar.app.enabled": "false",
                                                   "listen.drain_timeout": "60"})
    assert "ConfigMap" in {d["kind"] for d in rendered.docs}


def test_an_admin_socket_in_a_writable_directory_is_accepted(
        render: Callable[..., Rendered]) -> None:
    admin = {"admin.token.fromEnv": "ADMIN_TOKEN"}
    for listen in ("unix:/tmp/admin.sock", "unix:///tmp/run/admin.sock"):
        render("standalone-minimal.yaml", sets={**admin, "admin.listen": listen})
    render("sidecar-redis.yaml", sets={**admin, "admin.listen": "unix:/run/tenantgate/a.sock"})
    render("standalone-minimal.yaml", sets={
        **admin, "admin.listen": "unix:/var/run/admin/a.sock",
        "extraVolumes[0].name": "admin", "extraVolumes[0].emptyDir.medium": "Memory",
        "extraVolumeMounts[0].name": "admin", "extraVolumeMounts[0].mountPath": "/var/run/admin"})


def test_a_loopback_admin_api_is_accepted_and_any_address_without_a_network_policy(
        render: Callable[..., Rendered]) -> None:
    admin = {"admin.token.fromEnv": "ADMIN_TOKEN"}
    for listen in ("127.0.0.1:9002", "localhost:9002", "[::1]:9002"):
        render("standalone-minimal.yaml", sets={**admin, "admin.listen": listen})
    render("standalone-no-metrics.yaml", sets={**admin, "admin.listen": "0.0.0.0:9002"})
    # Sidecar mode with the app in the user's own chart: the NetworkPolicy is theirs too.
    render("sidecar-redis.yaml", sets={**admin, "admin.listen": "0.0.0.0:9002",
                                       "sidecar.app.enabled": "false"})


def test_9901_is_free_for_the_app_once_envoys_admin_is_a_socket(
        render: Callable[..., Rendered]) -> None:
    """Envoy's admin listens on a unix socket, not on 127.0.0.1:9901: that port is the app's."""
    render("sidecar-redis.yaml", sets={"sidecar.app.port": "9901"})
    render("sidecar-redis.yaml", sets={"sidecar.envoy.port": "9901"})
    render("sidecar-redis.yaml", sets={"sidecar.app.port": "9901",
                                       "sidecar.envoyConfigArgs": "{--admin,unix:/tmp/a.sock}"})


def test_the_memory_quota_store_is_accepted_where_only_one_pod_runs(
        render: Callable[..., Rendered]) -> None:
    for sets in ({"quota.enabled": "true", "autoscaling.enabled": "false", "replicaCount": "1"},
                 {"quota.enabled": "true", "autoscaling.maxReplicas": "1",
                  "autoscaling.minReplicas": "1"},
                 {"quota.enabled": "false"},
                 {"quota.enabled": "true", "quota.store": "redis"}):
        assert "Deployment" in render("standalone-minimal.yaml", sets=sets).kinds(), sets
    # sidecar.app off: the user's own chart owns the replica count, the chart cannot know it.
    assert "ConfigMap" in render("sidecar-memory.yaml", sets={"sidecar.app.replicas": "1"}).kinds()
    assert "ConfigMap" in render("sidecar-memory.yaml", sets={
        "sidecar.app.enabled": "false", "sidecar.app.replicas": "3"}).kinds()


def test_degraded_is_accepted_when_quota_replicas_covers_the_most_pods(
        render: Callable[..., Rendered]) -> None:
    degraded = {"quota.enabled": "true", "quota.store": "redis",
                "quota.redis.url": "redis://redis:6379/0", "quota.failure_mode": "degraded"}
    for sets in ({"quota.replicas": "10"}, {"quota.replicas": "12"},
                 {"quota.replicas": "3", "autoscaling.maxReplicas": "3"},
                 {"quota.replicas": "2", "autoscaling.enabled": "false", "replicaCount": "2"}):
        assert "Deployment" in render("standalone-minimal.yaml", sets={**degraded, **sets}).kinds()
    # Not degraded: quota.replicas means nothing to closed or open.
    assert "Deployment" in render("standalone-minimal.yaml", sets={
        **degraded, "quota.failure_mode": "open", "quota.replicas": "1"}).kinds()
    # sidecar.app off: the user's own chart owns the replica count, the chart cannot know it.
    assert "ConfigMap" in render("sidecar-redis.yaml", sets={
        **degraded, "quota.replicas": "1", "sidecar.app.enabled": "false"}).kinds()


ONE_POD = {"autoscaling": {"enabled": False}, "replicaCount": 1}
APP_ELSEWHERE = {"mode": "sidecar", "sidecar": {"app": {"enabled": False}}}
DEGRADED = {"failure_mode": "degraded"}
DEGRADED_PLAN = {"plans": {"free": {"limits": ["1/s"], "failure_mode": "degraded"}}}
DEGRADED_TENANT = {"registry": {"acme": {"overrides": {"failure_mode": "degraded"}}}}
MEMORY_ON, MEMORY_OFF = {"enabled": True}, {"enabled": False}
REDIS_OFF = {**REDIS_QUOTA, "enabled": False}
# (quota, tenants, the rest of the values): quota.replicas, degraded and the memory store.
QUOTA_CASES = [
    pytest.param(MEMORY_ON, {}, ONE_POD, id="memory"),
    pytest.param({**MEMORY_ON, "replicas": 1}, {}, ONE_POD, id="memory-replicas-1"),
    pytest.param({**MEMORY_ON, "replicas": 2}, {}, ONE_POD, id="memory-replicas-2"),
    pytest.param({**MEMORY_ON, **DEGRADED, "replicas": 1}, {}, ONE_POD, id="memory-degraded"),
    pytest.param({**MEMORY_ON, **DEGRADED_PLAN, "replicas": 1}, {}, ONE_POD,
                 id="memory-degraded-plan"),
    pytest.param({**MEMORY_ON, "replicas": 1}, DEGRADED_TENANT, ONE_POD,
                 id="memory-degraded-tenant"),
    # Quota off: nothing is enforced, and the chart checks nothing.
    pytest.param({**MEMORY_OFF, "replicas": 3}, {}, ONE_POD, id="off-memory-replicas-3"),
    pytest.param({**MEMORY_OFF, **DEGRADED, "replicas": 1}, {}, ONE_POD,
                 id="off-memory-degraded"),
    pytest.param({**MEMORY_OFF, **DEGRADED_PLAN}, {}, ONE_POD, id="off-memory-degraded-plan"),
    pytest.param(MEMORY_OFF, DEGRADED_TENANT, ONE_POD, id="off-memory-degraded-tenant"),
    pytest.param({**REDIS_OFF, **DEGRADED}, {}, ONE_POD, id="off-redis-degraded-no-replicas"),
    # quota.redis beside the memory store would be ignored: tenantgate refuses it, on or off.
    pytest.param({**MEMORY_ON, "redis": REDIS_QUOTA["redis"]}, {}, ONE_POD,
                 id="memory-with-redis-settings"),
    pytest.param({**MEMORY_OFF, "redis": REDIS_QUOTA["redis"]}, {}, ONE_POD,
                 id="off-memory-with-redis-settings"),
    pytest.param({**REDIS_QUOTA, "replicas": 3}, {}, ONE_POD, id="redis-replicas-3"),
    pytest.param({**REDIS_QUOTA, **DEGRADED, "replicas": 1}, {}, ONE_POD, id="redis-degraded"),
    pytest.param({**REDIS_QUOTA, **DEGRADED}, {}, ONE_POD, id="redis-degraded-no-replicas"),
    pytest.param({**REDIS_QUOTA, **DEGRADED_PLAN}, {}, ONE_POD,
                 id="redis-degraded-plan-no-replicas"),
    pytest.param(REDIS_QUOTA, DEGRADED_TENANT, ONE_POD, id="redis-degraded-tenant-no-replicas"),
    pytest.param({**REDIS_QUOTA, **DEGRADED, "replicas": 1}, {}, APP_ELSEWHERE,
                 id="redis-degraded-app-elsewhere"),
    pytest.param({**REDIS_QUOTA, **DEGRADED}, {}, APP_ELSEWHERE,
                 id="redis-degraded-no-replicas-app-elsewhere"),
]


@pytest.mark.parametrize(("quota", "tenants", "values"), QUOTA_CASES)
def test_the_chart_refuses_exactly_the_quota_configs_tenantgate_refuses(
        helm: str, render: Callable[..., Rendered], key_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], quota: dict[str, Any], tenants: dict[str, Any],
        values: dict[str, Any]) -> None:
    # The chart rendered configs check-config refused (quota.replicas 2 on the memory store;
    # memory-store checks with the quota off): the pods crash-looped on upgrade.
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump({**values, "quota": quota, "tenants": tenants}))
    chart = run_helm(helm, "template", "tg", str(CHART), "-f", str(values_file))
    # What tenantgate makes of the same sections (copied from values unchanged) in a config
    # the chart renders: the refused ones render no config of their own.
    config = yaml.safe_load(render("standalone-minimal.yaml").config_text())
    config["quota"] = {**yaml.safe_load((CHART / "values.yaml").read_text())["quota"], **quota}
    config["tenants"]["registry"] = tenants.get("registry", {})
    if chart.returncode == 0:
        rendered = yaml.safe_load(Rendered([
            d for d in yaml.safe_load_all(chart.stdout) if d]).config_text())
        assert {k: rendered[k] for k in ("quota", "tenants")} == {
            k: config[k] for k in ("quota", "tenants")}
    (key_dir / "config.yaml").write_text(yaml.safe_dump(config))
    from tenantgate.cli import main

    exit_code = main(["check-config", str(key_dir / "config.yaml")])
    err = capsys.readouterr().err
    assert (chart.returncode == 0) == (exit_code == 0), (chart.stderr, err)


# The chart's schema and tenantgate's config model must name the same keys, or values that
# check-config accepts would be refused by Helm (or the reverse).
# listen.tls and listen.health: set by the chart from its own `tls` and `ports.health` (the
# Secret's mount path, the probes' port), so values.schema.json refuses them under listen.
CHART_MANAGED = {"listen": {"grpc", "metrics", "uds", "tls", "health"}, "context": {"keys"}}


def _schema() -> dict[str, Any]:
    return dict(json.loads((CHART / "values.schema.json").read_text()))


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return dict(schema["definitions"][name])
    return node


def _pairs(schema: dict[str, Any], node: dict[str, Any], model: type[BaseModel],
           path: str) -> list[tuple[str, set[str], set[str]]]:
    """(key path, keys the schema allows, keys the model accepts) for `node` and below."""
    node = _resolve(schema, node)
    if node.get("type") == "array":
        node = _resolve(schema, node["items"])
    if node.get("additionalProperties") not in (None, False):
        node = _resolve(schema, node["additionalProperties"])  # a map: name -> model
    props = node.get("properties", {})
    fields = {f.alias or name: f for name, f in model.model_fields.items()}
    out = [(path, set(props), set(fields) - CHART_MANAGED.get(path, set()))]
    for key, field in fields.items():
        sub = _model_in(field.annotation)
        if sub is not None and key in props:
            out += _pairs(schema, props[key], sub, f"{path}.{key}")
    return out


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if (found := _model_in(arg)) is not None:
            return found
    return None


def _config_pairs() -> list[tuple[str, set[str], set[str]]]:
    schema = _schema()
    pairs = []
    for section, field in Config.model_fields.items():
        model = _model_in(field.annotation)
        assert model is not None, section
        pairs += _pairs(schema, schema["properties"].get(section, {}), model, section)
    return pairs


@pytest.mark.parametrize(("path", "schema_keys", "model_keys"), _config_pairs(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_values_schema_names_exactly_the_config_keys(
        path: str, schema_keys: set[str], model_keys: set[str]) -> None:
    assert schema_keys == model_keys, (
        f"{path}: only in the chart schema {sorted(schema_keys - model_keys)}, "
        f"only in the config model {sorted(model_keys - schema_keys)}")


def test_probe_services_are_exactly_what_the_health_servicer_registers() -> None:
    """Any other name makes the gRPC health check answer NOT_FOUND: the pod never gets ready."""
    service = _schema()["properties"]["probes"]["properties"]["service"]
    assert service["enum"] == ["", *SERVICES]


def test_every_config_section_is_a_values_key() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(Config.model_fields) <= set(values)
    assert set(Config.model_fields) <= set(_schema()["properties"])


def test_the_values_header_names_every_config_section_passed_through() -> None:
    """The header lists the sections copied 1:1 into the config file; api_keys and admin were
    passed through too but missing from the list."""
    text = (CHART / "values.yaml").read_text()
    header = text[:text.index("\n\n")]
    assert all(f"`{section}`" in header for section in Config.model_fields)
