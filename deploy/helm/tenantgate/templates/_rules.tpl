{{/*
Prometheus alert rule groups (the `spec` of the PrometheusRule; also a plain Prometheus rules
file: deploy/prometheus/tenantgate-rules.yaml is this template rendered with default values).
*/}}

{{/* The Operator object scraping this release: ServiceMonitor, PodMonitor, or none. */}}
{{- define "tenantgate.monitorKind" -}}
{{- if and .Values.metrics.enabled .Values.metrics.serviceMonitor.enabled -}}
{{- if eq .Values.mode "standalone" -}}ServiceMonitor
{{- else if .Values.sidecar.app.enabled -}}PodMonitor
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The `job` label of this release's targets, as the Prometheus Operator sets it without a jobLabel:
a ServiceMonitor's is the Service's name, a PodMonitor's "<namespace>/<PodMonitor name>". Empty
when the chart renders neither: the scrape config is someone else's and its job unknown here.
*/}}
{{- define "tenantgate.scrapeJob" -}}
{{- $kind := include "tenantgate.monitorKind" . -}}
{{- if eq $kind "ServiceMonitor" -}}{{ include "tenantgate.fullname" . }}
{{- else if eq $kind "PodMonitor" -}}{{ printf "%s/%s" .Release.Namespace (include "tenantgate.sidecar.appName" .) }}
{{- end -}}
{{- end -}}

{{/* Deny reasons answered 401: a credential that did not verify (decision.py STATUS table). */}}
{{- define "tenantgate.authFailureReasons" -}}
no_credential|malformed_token|token_too_large|algorithm_not_allowed|unknown_issuer|unknown_key|bad_signature|token_expired|token_not_yet_valid|token_issued_in_future|token_too_old|wrong_audience|wrong_token_type|unsupported_crit|bad_claims|tenant_missing|tenant_invalid|issuer_not_allowed_for_tenant|api_key_invalid|api_key_revoked|api_key_expired
{{- end -}}

{{/* Deny reasons answered 503: a dependency tenantgate needs failed (decision.py STATUS table). */}}
{{- define "tenantgate.unavailableReasons" -}}
quota_unavailable|keyset_unavailable|api_key_store_unavailable|dependency_unavailable
{{- end -}}

{{- define "tenantgate.ruleGroups" -}}
{{- $r := .Values.metrics.prometheusRule -}}
{{- $auth := printf "decision=\"deny\",reason=~\"%s\"" (include "tenantgate.authFailureReasons" .) -}}
{{- /* Scoped to this release when its scrape job is known: two releases in one Prometheus (one
per application in sidecar mode) must not fire each other's alerts with each other's
thresholds. $m: extra matchers, $s: a whole selector, $b: grouping labels to keep. */ -}}
{{- $job := include "tenantgate.scrapeJob" . -}}
{{- $m := "" -}}{{- $s := "" -}}{{- $b := "" -}}
{{- if $job -}}
{{- $m = printf ",namespace=%q,job=%q" .Release.Namespace $job -}}
{{- $s = printf "{%s}" (trimPrefix "," $m) -}}
{{- $b = "namespace, job, " -}}
{{- end -}}
{{- $sum := ternary "sum by (namespace, job) " "sum" (ne $job "") -}}
{{- $max := ternary "max by (namespace, job) " "max" (ne $job "") -}}
{{- $count := ternary "count by (namespace, job) " "count" (ne $job "") -}}
{{- $unavailable := printf "decision=\"deny\",reason=~\"%s\"" (include "tenantgate.unavailableReasons" .) -}}
groups:
  - name: tenantgate.tenants
    rules:
      - alert: TenantgateAuthFailureSpike
        # Both a share and a floor: a quiet tenant with two bad tokens is not a spike.
        expr: |
          (
            sum by ({{ $b }}tenant) (rate(tenantgate_checks_total{ {{- $auth }}{{ $m -}} }[5m]))
              / sum by ({{ $b }}tenant) (rate(tenantgate_checks_total{{ $s }}[5m]))
          ) > {{ $r.authFailureRatio }}
          and
          sum by ({{ $b }}tenant) (rate(tenantgate_checks_total{ {{- $auth }}{{ $m -}} }[5m])) > {{ $r.authFailureMinRate }}
        for: {{ $r.for }}
        labels: {severity: warning}
        annotations:
          # A credential that fails (bad JWT, bad API key) is refused before any tenant is known,
          # so it counts under tenant="other" (beside tenants outside tenants.registry); only
          # issuer_not_allowed_for_tenant denials carry a registry tenant's label.
          summary: {{ "Authentication failures spiking under tenant label \"{{ $labels.tenant }}\"" | quote }}
          description: {{ "{{ $value | humanizePercentage }} of Checks labelled tenant \"{{ $labels.tenant }}\" fail authentication (401). Credentials that do not verify (expired or forged tokens, a rotated IdP key, unknown or revoked API keys, credential stuffing) name no tenant yet, so they all count under tenant=\"other\", together with tenants outside tenants.registry. Under a registry tenant, only tokens from an issuer not allowed for that tenant count (issuer_not_allowed_for_tenant)." | quote }}
      - alert: TenantgateTenantThrottled
        expr: |
          (
            sum by ({{ $b }}tenant) (rate(tenantgate_quota_decisions_total{result="limited"{{ $m }}}[5m]))
              / sum by ({{ $b }}tenant) (rate(tenantgate_quota_decisions_total{{ $s }}[5m]))
          ) > {{ $r.throttledRatio }}
        for: {{ $r.throttledFor }}
        labels: {severity: info}
        annotations:
          summary: {{ "Tenant \"{{ $labels.tenant }}\" is being rate limited (429)" | quote }}
          description: {{ "{{ $value | humanizePercentage }} of tenant \"{{ $labels.tenant }}\"'s requests were answered 429 for a sustained period: the plan may be too small, or a client is misbehaving." | quote }}
      - alert: TenantgateRateLimitDomainThrottled
        # ShouldRateLimit (Envoy's rate limit filter) answers per descriptor domain, outside
        # the Check quota that TenantgateTenantThrottled watches; same thresholds.
        expr: |
          (
            sum by ({{ $b }}domain) (rate(tenantgate_ratelimit_service_requests_total{result="over_limit"{{ $m }}}[5m]))
              / sum by ({{ $b }}domain) (rate(tenantgate_ratelimit_service_requests_total{{ $s }}[5m]))
          ) > {{ $r.throttledRatio }}
        for: {{ $r.throttledFor }}
        labels: {severity: info}
        annotations:
          summary: {{ "Rate-limit domain \"{{ $labels.domain }}\" is answering 429" | quote }}
          description: {{ "{{ $value | humanizePercentage }} of ShouldRateLimit calls for domain \"{{ $labels.domain }}\" were answered OVER_LIMIT (429) for a sustained period: a limit in quota.ratelimit_service.config_files may be too small, or a client is misbehaving." | quote }}
      - alert: TenantgateCrossTenantAttempts
        expr: |
          sum by ({{ $b }}tenant) (increase(tenantgate_cross_tenant_attempts_total{{ $s }}[10m])) >= {{ $r.crossTenantMinCount }}
        labels: {severity: warning}
        annotations:
          summary: {{ "Tenant \"{{ $labels.tenant }}\" is requesting other tenants' resources" | quote }}
          description: {{ "{{ $value | humanize }} requests in 10 minutes by tenant \"{{ $labels.tenant }}\" named another tenant in the path (answered 404). Look for enumeration in the audit log." | quote }}
      - alert: TenantgateRevokedApiKeyInUse
        expr: |
          sum by ({{ $b }}tenant) (increase(tenantgate_apikey_revoked_attempts_total{{ $s }}[10m])) >= {{ $r.revokedKeyMinCount }}
        labels: {severity: info}
        annotations:
          summary: {{ "Revoked API keys of tenant \"{{ $labels.tenant }}\" are still being used" | quote }}
          description: {{ "{{ $value | humanize }} attempts in 10 minutes with revoked keys of tenant \"{{ $labels.tenant }}\": a client was not updated, or a leaked key is being tried." | quote }}
  - name: tenantgate.dependencies
    rules:
      - alert: TenantgateJwksRefreshFailing
        # Errors and no successful fetch: cached keys still verify tokens until max_stale, then
        # none do (TenantgateDependencyUnavailable).
        # Per instance: each replica fetches on its own, and one that cannot reach the IdP
        # (its egress, its DNS) must not be hidden by another that can.
        expr: |
          sum by ({{ $b }}issuer, instance) (increase(tenantgate_jwks_fetches_total{result="error"{{ $m }}}[15m])) > 0
          unless on ({{ $b }}issuer, instance)
          sum by ({{ $b }}issuer, instance) (increase(tenantgate_jwks_fetches_total{result=~"ok|not_modified"{{ $m }}}[15m])) > 0
        for: 10m
        labels: {severity: warning}
        annotations:
          summary: {{ "JWKS refresh failing for issuer \"{{ $labels.issuer }}\" on {{ $labels.instance }}" | quote }}
          description: {{ "tenantgate instance {{ $labels.instance }} could not fetch the keys of issuer \"{{ $labels.issuer }}\" for 15 minutes. Tokens signed with a new or rotated key are refused now; the keys already known verify tokens only until jwks.max_stale (1h by default) past their TTL, and after that every token of the issuer is answered 503 (keyset_unavailable, TenantgateDependencyUnavailable) until a fetch succeeds." | quote }}
      - alert: TenantgateDependencyUnavailable
        # What clients see of any dependency down: Checks answered 503. The API-key store had
        # no alert at all, and a quota store failing closed or an issuer's keys past max_stale
        # only warnings that came after clients had been refused for minutes. The window is
        # shorter than `for`: one burst of 503s (a Redis restart) must not page.
        expr: |
          sum by ({{ $b }}reason) (rate(tenantgate_checks_total{ {{- $unavailable }}{{ $m -}} }[1m])) > 0
        for: 2m
        labels: {severity: critical}
        annotations:
          summary: {{ "tenantgate answers 503 ({{ $labels.reason }}): a dependency is down" | quote }}
          description: {{ "{{ $value | humanize }} Checks per second are refused 503 with reason {{ $labels.reason }} because a dependency failed: api_key_store_unavailable, the API-key store (Redis, api_keys.redis_url) cannot be read, so every API-key caller is refused; quota_unavailable, the quota store failed and the failure mode in force (quota, plan or tenant override) is closed; keyset_unavailable, an issuer's keys could not be fetched for longer than jwks.max_stale, so its tokens are refused (see TenantgateJwksRefreshFailing); dependency_unavailable, another dependency. The log says which and why." | quote }}
      - alert: TenantgateRevocationChannelDown
        # The subscription that drops a revoked API key from every replica's cache at once.
        expr: |
          tenantgate_apikey_revocation_subscribed{{ $s }} == 0
        for: 5m
        labels: {severity: warning}
        annotations:
          summary: {{ "tenantgate instance {{ $labels.instance }} does not hear API-key revocations" | quote }}
          description: {{ "tenantgate instance {{ $labels.instance }} has not been subscribed to the revocation channel \"{{ $labels.channel }}\" for 5 minutes: a key revoked (or rotated) meanwhile is still accepted by this replica until its cached copy is older than api_keys.cache_ttl. Most often the Redis user lacks the channel: its ACL needs &{{ $labels.channel }} (docs/api-keys.md, \"Redis permissions\"); the log says why." | quote }}
      - alert: TenantgateQuotaStoreErrors
        expr: |
          {{ $sum }}(rate(tenantgate_quota_store_errors_total{{ $s }}[5m])) > 0
        for: {{ $r.for }}
        labels: {severity: warning}
        annotations:
          summary: "tenantgate cannot reach its quota store (Redis)"
          description: {{ "{{ $value | humanize }} quota store errors per second. Depending on quota failure mode, requests are denied (503) or admitted without limits." | quote }}
      - alert: TenantgateQuotaFailOpen
        # Fail-open is a choice an operator made; when it happens, someone should know at once.
        expr: |
          {{ $sum }}(increase(tenantgate_quota_fail_open_total{{ $s }}[5m])) > 0
        labels: {severity: critical}
        annotations:
          summary: "tenantgate is admitting requests without quota checks (fail-open)"
          description: {{ "{{ $value | humanize }} requests in 5 minutes were admitted because the quota store failed and the failure mode is open." | quote }}
      - alert: TenantgateQuotaDegraded
        expr: |
          {{ $max }}(tenantgate_quota_degraded_active{{ $s }}) > 0
        for: {{ $r.for }}
        labels: {severity: warning}
        annotations:
          summary: "tenantgate quota enforcement is degraded"
          description: "At least one tenantgate instance runs its quota in degraded mode (the store is unavailable); limits are approximate or off until it recovers."
  - name: tenantgate.service
    rules:
{{- if $job }}
{{- $up := printf "up{namespace=%q,job=%q}" .Release.Namespace $job }}
{{- $kind := include "tenantgate.monitorKind" . }}
      - alert: TenantgateDown
        # This release's own job: no target answers, or none is left to scrape. Its tenantgate
        # series go stale with it, so they cannot say so; nor can absent() over the whole
        # Prometheus while another release (sidecar mode: one per application) is up.
        expr: |
          absent({{ $up }} == 1)
        for: {{ $r.for }}
        # absent() of an expression carries no labels: these route the alert.
        labels: {severity: critical, namespace: {{ .Release.Namespace | quote }}, job: {{ $job | quote }}}
        annotations:
          summary: {{ printf "No tenantgate of job %s is up" $job | quote }}
          description: {{ printf "Prometheus scrapes no tenantgate of job %s in namespace %s: every instance is down, unreachable or gone, or the %s is not picked up by Prometheus. Meanwhile every Envoy that calls it answers its requests 503 (ext_authz fails closed). Check the pods, their probes and the %s." $job .Release.Namespace $kind $kind | quote }}
      - alert: TenantgateInstanceDown
        # Each instance down, whether or not others of the job answer.
        expr: |
          {{ $up }} == 0
        for: {{ $r.for }}
        labels: {severity: warning}
        annotations:
          summary: {{ "tenantgate instance {{ $labels.instance }} is down" | quote }}
          description: {{ "Prometheus cannot scrape tenantgate at {{ $labels.instance }} (job {{ $labels.job }}): the pod is down, restarting or cut off from Prometheus." | quote }}
{{- else }}
      - alert: TenantgateDown
        # The job is not known here, so the jobs that exported tenantgate's series in the last
        # day stand for it: one with none now is down, though another job still answers.
        # absent(): no tenantgate scraped at all (never, or down for longer than that day).
        expr: |
          (
            group by (job) (max_over_time(tenantgate_internal_errors_total[1d]))
              unless on (job) tenantgate_internal_errors_total
          )
          or on () absent(tenantgate_internal_errors_total)
        for: {{ $r.for }}
        labels: {severity: critical}
        annotations:
          summary: {{ "No tenantgate is being scraped{{ with $labels.job }} in job \"{{ . }}\"{{ end }}" | quote }}
          description: {{ "{{ with $labels.job }}Job \"{{ . }}\" exports no tenantgate metrics any more{{ else }}No tenantgate exports metrics{{ end }}: it is down, unreachable or not scraped. While it is down, Envoy answers every request 503 (ext_authz fails closed). Check the pods, their probes and the scrape config. Several tenantgate deployments in one scrape job count as one here: see deploy/README.md." | quote }}
      - alert: TenantgateInstanceDown
        # Targets that exported tenantgate's series in the last day, so a shared scrape job's
        # other targets never match, and every instance down still does.
        expr: |
          up == 0 and on (job, instance) max_over_time(tenantgate_internal_errors_total[1d])
        for: {{ $r.for }}
        labels: {severity: warning}
        annotations:
          summary: {{ "tenantgate instance {{ $labels.instance }} is down" | quote }}
          description: {{ "Prometheus cannot scrape tenantgate at {{ $labels.instance }} (job {{ $labels.job }}): the pod is down, restarting or cut off from Prometheus." | quote }}
{{- end }}
      - alert: TenantgateInternalErrors
        # Bugs in a Check, and in the background tasks that retry on their own (JWKS refresh,
        # batched quota sync, TLS re-read, starting or closing a reload's runtime).
        expr: |
          {{ $sum }}(increase(tenantgate_internal_errors_total{{ $s }}[5m])) > 0
        labels: {severity: critical}
        annotations:
          summary: "tenantgate hit unexpected errors"
          description: {{ "{{ $value | humanize }} unexpected exceptions (bugs) in 5 minutes. In a Check, the Check ended in gRPC INTERNAL and Envoy's failure mode decided the request; in a background task (a JWKS refresh, the batched quota sync, the TLS certificate re-read, building or starting a reloaded config, closing the old one), that round was lost and the task retries: keys, quota charges or certificates may be going stale, and a reload failing this way is rejected. The traceback is in the logs." | quote }}
      - alert: TenantgateAuditWriteErrors
        # Decisions go on; their audit lines do not (disk full, closed pipe).
        expr: |
          {{ $sum }}(increase(tenantgate_audit_write_errors_total{{ $s }}[5m])) > 0
        labels: {severity: critical}
        annotations:
          summary: "tenantgate is losing audit lines"
          description: {{ "{{ $value | humanize }} audit lines in 5 minutes could not be written; decisions are unaffected. Free the disk or fix the audit path; the log says why." | quote }}
      - alert: TenantgateAuditLinesDropped
        # Verified callers' denials over audit.max_lines_per_second, or over one caller's share
        # of it: the audit log is missing denials or cross-tenant probes that the metrics count.
        expr: |
          {{ $sum }}(increase(tenantgate_audit_lines_dropped_total{class=~"cross_tenant|identified"{{ $m }}}[5m])) > 0
        labels: {severity: warning}
        annotations:
          summary: "tenantgate dropped verified callers' denials from the audit log"
          description: {{ "{{ $value | humanize }} denials of verified callers in 5 minutes were over audit.max_lines_per_second (or a caller's quarter of it) and not written; each second's count is in an audit_lines_dropped line. A tenant flooding denials, or too low a cap." | quote }}
      - alert: TenantgateEventLoopStalled
        # A stall holds every Check behind it; past Envoy's ext_authz timeout they are denied.
        expr: |
          {{ $sum }}(increase(tenantgate_event_loop_lag_seconds_bucket{le="+Inf"{{ $m }}}[10m])) - {{ $sum }}(increase(tenantgate_event_loop_lag_seconds_bucket{le="0.1"{{ $m }}}[10m])) > 0
        labels: {severity: warning}
        annotations:
          summary: "tenantgate's event loop stalled"
          description: {{ "The event loop was held more than 0.1 s {{ $value | humanize }} times in 10 minutes; Checks waiting behind it may have outlived Envoy's ext_authz timeout and been denied. The log says how long; look for CPU throttling (the pod's CPU limit), a slow audit disk or a paused node." | quote }}
      - alert: TenantgateConfigReloadRejected
        # The running config is kept, but the next restart would load the broken one and fail.
        # A gauge, not increase() over a window: that cleared itself after 15 minutes while the
        # rejected file stayed in place; this fires until a reload succeeds.
        expr: |
          tenantgate_config_last_reload_successful{{ $s }} == 0
        labels: {severity: warning}
        annotations:
          summary: {{ "tenantgate instance {{ $labels.instance }} refused its new config" | quote }}
          description: {{ "The last config reload (SIGHUP) of {{ $labels.instance }} was rejected: it keeps serving the previous config, but the file in place is the rejected one, so a restart of this instance would fail to start. Run `tenantgate check-config` on the new config (the log names each key at fault), fix it and reload again; this clears once a reload succeeds." | quote }}
      - alert: TenantgateTlsRereadFailing
        # Certificate files are read again every minute and on SIGHUP; an unusable set is
        # logged and the served one kept, so a renewal that cannot be read goes unnoticed.
        # More than 2 in 10 minutes (one a minute): a file caught half written once is not it.
        expr: |
          sum by ({{ $b }}instance, listener) (increase(tenantgate_tls_reread_failures_total{{ $s }}[10m])) > 2
        labels: {severity: warning}
        annotations:
          summary: {{ "tenantgate instance {{ $labels.instance }} cannot read its new {{ $labels.listener }} certificate" | quote }}
          description: {{ "tenantgate instance {{ $labels.instance }} failed {{ $value | humanize }} times in 10 minutes to read the TLS files of its {{ $labels.listener }} listener again (half written, a key that does not match the certificate, unreadable). It keeps serving the certificate it has until that expires; then clients' handshakes fail. The log names the file and the fault." | quote }}
      - alert: TenantgateSigningKeysMixed
        # During a signing-key rotation (deploy/README.md) replicas sign with two keys for one
        # rollout; for half an hour, the rotation is stuck half-way (a rollout that does not
        # finish, a replica that rejected its reload).
        expr: |
          {{ $count }}(count by ({{ $b }}key_id) (tenantgate_context_signing_key_info{{ $s }})) > 1
        for: 30m
        labels: {severity: warning}
        annotations:
          summary: "tenantgate replicas sign tenant contexts with different keys"
          description: {{ "{{ $value | humanize }} signing key ids (context.active_key) have been in use at once for 30 minutes: a signing-key rotation is stuck half-way. `count by (key_id) (tenantgate_context_signing_key_info)` shows which; finish the rollout (or the reload) before retiring the old key, or contexts signed with it will be refused." | quote }}
      - alert: TenantgateCheckLatencyHigh
        expr: |
          histogram_quantile(0.99, sum by ({{ $b }}le) (rate(tenantgate_check_duration_seconds_bucket{{ $s }}[5m]))) > {{ $r.checkLatencyP99Seconds }}
        for: 10m
        labels: {severity: warning}
        annotations:
          summary: "tenantgate Check p99 latency is high"
          description: {{ "p99 Check latency is {{ $value | humanizeDuration }}; every request through Envoy waits for it." | quote }}
{{- end -}}
