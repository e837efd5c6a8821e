{{/* Names, labels, the rendered tenantgate config and the pieces both modes share. */}}

{{- define "tenantgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tenantgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The headless Service: a name is at most 63 characters, so the full name leaves room. */}}
{{- define "tenantgate.headlessName" -}}
{{- printf "%s-headless" (include "tenantgate.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}

{{- define "tenantgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tenantgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tenantgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 }}
{{ include "tenantgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tenantgate
{{- end -}}

{{/* The application's pods in sidecar mode: their own name, so selectors never overlap. */}}
{{- define "tenantgate.sidecar.appName" -}}
{{- printf "%s-%s" (include "tenantgate.fullname" .) .Values.sidecar.app.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tenantgate.sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ .Values.sidecar.app.name }}
app.kubernetes.io/instance: {{ .Release.Name }}
tenantgate.io/protected: "true"
{{- end -}}

{{- define "tenantgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tenantgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tenantgate.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
Seconds in a config duration (30s, 500ms, 5m, 1.5h, 2d, or a bare number), as the config reads
it (config/types.py); the schema has already refused any other form.
*/}}
{{- define "tenantgate.seconds" -}}
{{- if kindIs "string" . -}}
{{- $text := trim . -}}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $text -}}
{{- $unit := trimPrefix $number $text | trim -}}
{{- $units := dict "" 1.0 "s" 1.0 "ms" 0.001 "m" 60.0 "h" 3600.0 "d" 86400.0 -}}
{{- if or (not $number) (not (hasKey $units $unit)) -}}
{{- fail (printf "%q: not a duration such as 30s, 500ms, 5m" .) -}}
{{- end -}}
{{- mulf (float64 $number) (get $units $unit) -}}
{{- else -}}
{{- /* a YAML number, which Helm holds as float64 (toString would write 1e+06) */ -}}
{{- float64 . -}}
{{- end -}}
{{- end -}}

{{/*
The gRPC Service ports' appProtocol. Istio reads grpc as plaintext HTTP/2: a sidecar on either end
would parse the TLS of tls.enabled as HTTP/2 and fail every call. https is TLS it leaves alone
(the same as tls for a sidecar, and an IANA service name, as Kubernetes asks of an unprefixed one).
*/}}
{{- define "tenantgate.grpcAppProtocol" -}}
{{- ternary "https" "grpc" .Values.tls.enabled -}}
{{- end -}}

{{/* listenHost:PORT for a port (list root port), the IPv6 host in brackets as gRPC and Envoy
read it ([::]:9001; ::9001 would be one address). */}}
{{- define "tenantgate.listenAddress" -}}
{{- $host := trimSuffix "]" (trimPrefix "[" (toString (index . 0).Values.listenHost)) -}}
{{- printf (ternary "[%s]:%d" "%s:%d" (contains ":" $host)) $host (int (index . 1)) -}}
{{- end -}}

{{- define "tenantgate.configDir" -}}/etc/tenantgate{{- end -}}
{{- define "tenantgate.socketPath" -}}{{ .Values.sidecar.socketDir }}/tenantgate.sock{{- end -}}
{{- define "tenantgate.envoyAdminSocket" -}}{{ .Values.sidecar.socketDir }}/envoy-admin.sock{{- end -}}
{{- define "tenantgate.envoyBootstrap" -}}/etc/envoy/envoy.yaml{{- end -}}

{{/*
Cross-field checks JSON Schema cannot express; each failure is one readable sentence.
*/}}
{{- define "tenantgate.validate" -}}
{{- $keys := .Values.signingKeys -}}
{{- if not $keys.existingSecret -}}
{{- fail "signingKeys.existingSecret: name the Secret holding the tenant-context signing keys (one item per key id)" -}}
{{- end -}}
{{- if not $keys.keyIds -}}
{{- fail "signingKeys.keyIds: list at least one key id (an item name in signingKeys.existingSecret)" -}}
{{- end -}}
{{- if not (has .Values.context.active_key $keys.keyIds) -}}
{{- fail (printf "context.active_key: %q is not one of signingKeys.keyIds %v" .Values.context.active_key $keys.keyIds) -}}
{{- end -}}
{{- if and (eq .Values.mode "sidecar") .Values.sidecar.app.enabled (not .Values.sidecar.app.image) -}}
{{- fail "sidecar.app.image: sidecar mode needs the application's image (the container tenantgate protects)" -}}
{{- end -}}
{{- if .Values.tls.enabled -}}
{{- if eq .Values.mode "sidecar" -}}
{{- fail "tls.enabled: sidecar mode's Envoy calls tenantgate over the Unix socket listen.uds, a local socket TLS does not cover; tls is for standalone mode, where Envoys call the pods across the network" -}}
{{- end -}}
{{- if not .Values.tls.existingSecret -}}
{{- fail "tls.existingSecret: name the Secret holding the certificate (tls.crt, tls.key, and ca.crt with tls.clientAuth), e.g. the secretName of a cert-manager Certificate" -}}
{{- end -}}
{{- end -}}
{{- $audit := clean (toString (default "-" .Values.audit.path)) -}}
{{- if and .Values.audit.enabled (include "tenantgate.pathWithin" (list $audit "/tmp")) -}}
{{- fail (printf "audit.path: %q is in /tmp, a 16Mi in-memory emptyDir counted against the memory limit and never rotated: a client sending bad tokens fills it and the pod is evicted. Use \"-\" (standard output, collected by the node's log pipeline)" $audit) -}}
{{- end -}}
{{- $configDir := include "tenantgate.configDir" . -}}
{{- if and .Values.audit.enabled (include "tenantgate.pathWithin" (list $audit $configDir)) -}}
{{- fail (printf "audit.path: %q is in %s, the read-only ConfigMap, so tenantgate would fail to start. Use \"-\" (standard output) or an absolute path on a volume from extraVolumes" $audit $configDir) -}}
{{- end -}}
{{- if eq .Values.mode "sidecar" -}}
{{- $socketDir := clean .Values.sidecar.socketDir -}}
{{- if and .Values.audit.enabled (include "tenantgate.pathWithin" (list $audit $socketDir)) -}}
{{- fail (printf "audit.path: %q is in sidecar.socketDir %s, a 1Mi in-memory emptyDir shared with Envoy: the first burst of audit lines fills it and the pod is evicted. Use \"-\" (standard output)" $audit $socketDir) -}}
{{- end -}}
{{- $adminSocket := include "tenantgate.envoyAdminSocket" . -}}
{{- if gt (len $adminSocket) 107 -}}
{{- fail (printf "sidecar.socketDir: %q is too long: Envoy's admin socket %s would be %d bytes, and a Unix socket path holds at most 107" .Values.sidecar.socketDir $adminSocket (len $adminSocket)) -}}
{{- end -}}
{{- range $mount := list "/tmp" $configDir (dir (include "tenantgate.envoyBootstrap" $)) -}}
{{- if include "tenantgate.pathsOverlap" (list $socketDir $mount) -}}
{{- fail (printf "sidecar.socketDir: %q overlaps %s, which the chart mounts for another volume; choose a directory of its own such as /run/tenantgate" $socketDir $mount) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* SIGTERM starts shutdown_delay then drain_timeout, after the preStop wait (sidecar mode:
    the app's, then the sidecars stop): a grace period shorter than that kills the pod with
    Checks in flight. A lifecycle of the app's own is the user's to count. */ -}}
{{- if or (eq .Values.mode "standalone") .Values.sidecar.app.enabled -}}{{- /* a pod of ours */ -}}
{{- $listen := default dict .Values.listen -}}
{{- $shutdown := include "tenantgate.seconds" (ternary (get $listen "shutdown_delay") 0 (hasKey $listen "shutdown_delay")) | float64 -}}
{{- $drain := include "tenantgate.seconds" (ternary (get $listen "drain_timeout") 10 (hasKey $listen "drain_timeout")) | float64 -}}
{{- $preStop := ternary 0 (int .Values.preStopSleepSeconds) (and (eq .Values.mode "sidecar") (not (empty .Values.sidecar.app.lifecycle))) -}}
{{- $needed := addf $preStop $shutdown $drain -}}
{{- if le (float64 .Values.terminationGracePeriodSeconds) $needed -}}
{{- fail (printf "terminationGracePeriodSeconds: %d must be longer than %s (%ss), or Kubernetes kills tenantgate while it drains" (int .Values.terminationGracePeriodSeconds) (ternary "listen.shutdown_delay + listen.drain_timeout" "preStopSleepSeconds + listen.shutdown_delay + listen.drain_timeout" (and (eq .Values.mode "sidecar") (not (empty .Values.sidecar.app.lifecycle)))) (regexReplaceAll "\\.?0+$" (printf "%.3f" $needed) "")) -}}
{{- end -}}
{{- end -}}
{{- /* null in values removes the key: read as 0 it said "minReplicas: 2 is above maxReplicas 0",
    and the quota checks below count the most pods by it */ -}}
{{- if and .Values.autoscaling.enabled (kindIs "invalid" .Values.autoscaling.maxReplicas) -}}
{{- fail "autoscaling.maxReplicas: not set, and autoscaling.enabled is true: the HorizontalPodAutoscaler needs the most pods it may run. Set it, or autoscaling.enabled: false with replicaCount" -}}
{{- end -}}
{{- /* the memory store counts in each pod apart: N pods admit N times every limit */ -}}
{{- $quota := default dict .Values.quota -}}
{{- /* tenantgate refuses quota.redis beside the memory store, quota on or off (it would be
    ignored): the pods would crash-loop */ -}}
{{- if and (hasKey $quota "redis") (eq (toString (default "memory" (get $quota "store"))) "memory") -}}
{{- fail "quota.redis is set, but quota.store is memory (the default), so it would be ignored and tenantgate refuses the config. Set quota.store: redis to share quotas through Redis, or remove quota.redis" -}}
{{- end -}}
{{- if and (get $quota "enabled") (eq (toString (default "memory" (get $quota "store"))) "memory") -}}
{{- $pods := "" -}}
{{- if eq .Values.mode "sidecar" -}}
{{- if and .Values.sidecar.app.enabled (gt (int .Values.sidecar.app.replicas) 1) -}}
{{- $pods = printf "sidecar.app.replicas is %d" (int .Values.sidecar.app.replicas) -}}
{{- end -}}
{{- else if .Values.autoscaling.enabled -}}
{{- if gt (int .Values.autoscaling.maxReplicas) 1 -}}
{{- $pods = printf "autoscaling.maxReplicas is %d" (int .Values.autoscaling.maxReplicas) -}}
{{- end -}}
{{- else if gt (int .Values.replicaCount) 1 -}}
{{- $pods = printf "replicaCount is %d" (int .Values.replicaCount) -}}
{{- end -}}
{{- if $pods -}}
{{- fail (printf "quota.store: memory (the default) counts in each pod apart, and %s: every tenant would get that many times its limits. Set quota.store: redis with quota.redis.url, or run one pod (%s)" $pods (ternary "sidecar.app.replicas: 1" "autoscaling.enabled: false, replicaCount: 1" (eq .Values.mode "sidecar"))) -}}
{{- end -}}
{{- /* tenantgate refuses it too (check-config exits 2): the pods would crash-loop */ -}}
{{- $shares := int (default 0 (get $quota "replicas")) -}}
{{- if gt $shares 1 -}}
{{- fail (printf "quota.replicas: %d says %d processes share the quota, but quota.store is memory (the default), which counts in each process apart (they would give every tenant %d times its limits), and tenantgate refuses the config. Set quota.store: redis with quota.redis.url, or quota.replicas: 1 with one pod" $shares $shares $shares) -}}
{{- end -}}
{{- end -}}
{{- /* degraded mode gives each pod limit ÷ quota.replicas while the store fails: fewer
    replicas than pods admit pods ÷ replicas times every limit. The chart refuses rather than
    filling quota.replicas in: the config is copied from values unchanged, and the value is the
    operator's to choose (the most pods; at fewer pods each still gets only that share). */ -}}
{{- if get $quota "enabled" -}}
{{- $degraded := "" -}}
{{- if eq (toString (get $quota "failure_mode")) "degraded" -}}
{{- $degraded = "quota.failure_mode" -}}
{{- end -}}
{{- range $name, $plan := (default dict (get $quota "plans")) -}}
{{- if and (not $degraded) (eq (toString (get (default dict $plan) "failure_mode")) "degraded") -}}
{{- $degraded = printf "quota.plans.%s.failure_mode" $name -}}
{{- end -}}
{{- end -}}
{{- range $id, $tenant := (dig "registry" dict (default dict .Values.tenants)) -}}
{{- if and (not $degraded) (eq (toString (dig "overrides" "failure_mode" "" (default dict $tenant))) "degraded") -}}
{{- $degraded = printf "tenants.registry.%s.overrides.failure_mode" $id -}}
{{- end -}}
{{- end -}}
{{- if and $degraded (eq (toString (default "memory" (get $quota "store"))) "memory") -}}
{{- fail (printf "%s: degraded, but quota.store is memory (the default), which runs in the pod and never fails, so degraded mode would never apply (tenantgate refuses the config). Set quota.store: redis with quota.redis.url, or another failure_mode" $degraded) -}}
{{- end -}}
{{- $most := 0 -}}{{- $mostKey := "" -}}
{{- if eq .Values.mode "sidecar" -}}
{{- if .Values.sidecar.app.enabled -}}{{- /* otherwise your chart sets the pod count */ -}}
{{- $most = int .Values.sidecar.app.replicas -}}{{- $mostKey = "sidecar.app.replicas" -}}
{{- end -}}
{{- else if .Values.autoscaling.enabled -}}
{{- $most = int .Values.autoscaling.maxReplicas -}}{{- $mostKey = "autoscaling.maxReplicas" -}}
{{- else -}}
{{- $most = int .Values.replicaCount -}}{{- $mostKey = "replicaCount" -}}
{{- end -}}
{{- $shares := int (default 0 (get $quota "replicas")) -}}
{{- if and $degraded (eq $shares 0) -}}{{- /* tenantgate refuses it whatever the pod count */ -}}
{{- $set := "Set quota.replicas to the most pods that can run (your chart sets the pod count)" -}}
{{- if $mostKey -}}
{{- $set = printf "Set quota.replicas: %d (%s, the most pods that can run)" $most $mostKey -}}
{{- end -}}
{{- fail (printf "quota.replicas: not set, and %s degraded needs it: each pod enforces limit / quota.replicas while the store fails. %s" $degraded $set) -}}
{{- end -}}
{{- if and $degraded $mostKey (lt $shares $most) -}}
{{- fail (printf "quota.replicas: %d, but %s is %d: %s degraded gives each pod limit / quota.replicas while the store fails, so %d pods would admit %s times every limit. Set quota.replicas: %d (the most pods that can run)" $shares $mostKey $most $degraded $most (regexReplaceAll "\\.?0+$" (printf "%.2f" (divf $most $shares)) "") $most) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail (printf "autoscaling.minReplicas: %d is above autoscaling.maxReplicas %d" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- /* the config lands in a ConfigMap, readable by whoever may read the namespace's ConfigMaps */ -}}
{{- range $key, $url := dict "quota.redis.url" (dig "redis" "url" "" (default dict .Values.quota)) "api_keys.redis_url" (dig "redis_url" "" (default dict .Values.api_keys)) -}}
{{- if regexMatch "^[a-z+]+://[^/@]*:[^/@]*@|[?&]password=" (toString $url) -}}
{{- fail (printf "%s: holds a password, and the chart writes the config into a ConfigMap. Move it to %s: {fromEnv: REDIS_PASSWORD} with a secretEnv entry of that name" $key (ternary "quota.redis.password" "api_keys.redis_password" (eq $key "quota.redis.url"))) -}}
{{- end -}}
{{- end -}}
{{- /* tenantgate reads a relative path from its config file's directory, the read-only ConfigMap */ -}}
{{- if and .Values.audit.enabled (ne $audit "-") (not (isAbs $audit)) -}}
{{- fail (printf "audit.path: %q is relative, so tenantgate would write it in %s, a read-only ConfigMap, and fail to start. Use \"-\" (standard output, collected by the node's log pipeline) or an absolute path on a volume from extraVolumes" $audit (include "tenantgate.configDir" .)) -}}
{{- end -}}
{{- /* admin.listen unix:PATH: the root filesystem is read-only, a relative path lands in the
    ConfigMap's directory; a socket needs a writable directory of the pod */ -}}
{{- with .Values.admin -}}
{{- $adminListen := toString (default "127.0.0.1:9002" .listen) -}}
{{- if hasPrefix "unix:" $adminListen -}}
{{- include "tenantgate.validateAdminSocket" (list $ $adminListen) -}}
{{- else if and $.Values.networkPolicy.enabled (or (ne $.Values.mode "sidecar") $.Values.sidecar.app.enabled) -}}
{{- /* the chart's NetworkPolicy (rendered as networkpolicy.yaml decides) admits the gRPC and
    metrics ports only: a pod address is unreachable */ -}}
{{- $host := regexReplaceAll ":[0-9]+$" $adminListen "" | trimPrefix "[" | trimSuffix "]" -}}
{{- if not (or (eq $host "localhost") (eq $host "::1") (regexMatch "^127\\.[0-9.]+$" $host)) -}}
{{- fail (printf "admin.listen: %q is not loopback, and the chart's NetworkPolicy admits only the gRPC and metrics ports, so nothing could reach it. Listen on 127.0.0.1:PORT and use kubectl port-forward (or a unix:PATH socket with kubectl exec)" $adminListen) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $ports := include "tenantgate.podPorts" . | fromYamlArray -}}
{{- range $i, $a := $ports -}}
{{- range $j, $b := $ports -}}
{{- if and (lt $j $i) (eq (int (index $a 1)) (int (index $b 1))) -}}
{{- fail (printf "%s: must differ from %s, both %d (the pod's containers share one network namespace: each port it listens on must be distinct)" (index $a 0) (index $b 0) (int (index $a 1))) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Fails unless the admin socket (list root "unix:PATH") lies in a directory the pod can write: /tmp,
sidecar.socketDir in sidecar mode, or a writable mount from extraVolumeMounts.
*/}}
{{- define "tenantgate.validateAdminSocket" -}}
{{- $root := index . 0 -}}{{- $listen := index . 1 -}}
{{- $path := ternary (trimPrefix "unix://" $listen) (trimPrefix "unix:" $listen) (hasPrefix "unix://" $listen) -}}
{{- $configDir := include "tenantgate.configDir" $root -}}
{{- $sidecar := eq $root.Values.mode "sidecar" -}}
{{- $where := printf "/tmp (an emptyDir of the pod, e.g. unix:/tmp/admin.sock)%s or a writable volume from extraVolumes and extraVolumeMounts" (ternary (printf ", sidecar.socketDir %s" (clean $root.Values.sidecar.socketDir)) "" $sidecar) -}}
{{- if not (isAbs $path) -}}
{{- fail (printf "admin.listen: %q is relative, so tenantgate would create the socket in %s, a read-only ConfigMap, and fail to start. Put it in %s" $listen $configDir $where) -}}
{{- end -}}
{{- if $sidecar -}}
{{- range $taken := list (include "tenantgate.socketPath" $root) (include "tenantgate.envoyAdminSocket" $root) -}}
{{- if eq (clean $path) (clean $taken) -}}
{{- fail (printf "admin.listen: %q is %s, a socket the sidecars use (tenantgate's Check socket, Envoy's admin); name another file" $listen (clean $taken)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $socketDir := dir (clean $path) -}}
{{- $writable := list "/tmp" -}}
{{- if $sidecar -}}{{- $writable = append $writable (clean $root.Values.sidecar.socketDir) -}}{{- end -}}
{{- range $root.Values.extraVolumeMounts -}}
{{- if and .mountPath (not .readOnly) -}}{{- $writable = append $writable (clean .mountPath) -}}{{- end -}}
{{- end -}}
{{- $ok := "" -}}
{{- range $writable -}}
{{- if include "tenantgate.pathWithin" (list $socketDir .) -}}{{- $ok = "true" -}}{{- end -}}
{{- end -}}
{{- if include "tenantgate.pathWithin" (list $socketDir $configDir) -}}
{{- fail (printf "admin.listen: %q is in %s, the read-only ConfigMap, so tenantgate would fail to start. Put it in %s" $listen $configDir $where) -}}
{{- else if not $ok -}}
{{- fail (printf "admin.listen: %q is in %s, on the read-only root filesystem, so tenantgate would fail to start. Put it in %s" $listen $socketDir $where) -}}
{{- end -}}
{{- end -}}

{{/*
"true" when the first clean absolute path is the second or lies under it, else "".
*/}}
{{- define "tenantgate.pathWithin" -}}
{{- $a := index . 0 -}}{{- $b := index . 1 -}}
{{- if or (eq $a $b) (eq $b "/") (hasPrefix (printf "%s/" $b) $a) -}}true{{- end -}}
{{- end -}}

{{/* "true" when either of two clean absolute paths lies within the other. */}}
{{- define "tenantgate.pathsOverlap" -}}
{{- $a := index . 0 -}}{{- $b := index . 1 -}}
{{- if or (include "tenantgate.pathWithin" (list $a $b)) (include "tenantgate.pathWithin" (list $b $a)) -}}true{{- end -}}
{{- end -}}

{{/*
Every TCP port the pod listens on, as a YAML list of [the values key that sets it, port], in the
order the clash message names them (the later one is the key to change). All containers of a pod
share its network namespace: loopback or not, two listeners on one port cannot both start.
*/}}
{{- define "tenantgate.podPorts" -}}
{{- $ports := list (list "ports.grpc" (int .Values.ports.grpc)) -}}
{{- if .Values.metrics.enabled -}}
{{- $ports = append $ports (list "ports.metrics" (int .Values.ports.metrics)) -}}
{{- end -}}
{{- if .Values.tls.enabled -}}
{{- $ports = append $ports (list "ports.health" (int .Values.ports.health)) -}}
{{- end -}}
{{- with .Values.admin -}}
{{- $listen := toString (default "127.0.0.1:9002" .listen) -}}
{{- if not (hasPrefix "unix:" $listen) -}}
{{- $ports = append $ports (list (printf "admin.listen %q" $listen) (regexFind "[0-9]+$" $listen | int)) -}}
{{- end -}}
{{- end -}}
{{- if eq .Values.mode "sidecar" -}}
{{- /* Envoy's admin listener: the chart's unix socket, unless sidecar.envoyConfigArgs gives
    another --admin (the last one given wins), which takes a TCP port when it is HOST:PORT. */ -}}
{{- $envoyAdmin := "" -}}
{{- $args := .Values.sidecar.envoyConfigArgs -}}
{{- range $i, $arg := $args -}}
{{- if and (eq (toString $arg) "--admin") (lt (add1 $i) (len $args)) -}}
{{- $envoyAdmin = toString (index $args (add1 $i)) -}}
{{- else if hasPrefix "--admin=" (toString $arg) -}}
{{- $envoyAdmin = trimPrefix "--admin=" (toString $arg) -}}
{{- end -}}
{{- end -}}
{{- if and $envoyAdmin (not (hasPrefix "unix:" $envoyAdmin)) -}}
{{- $ports = append $ports (list (printf "sidecar.envoyConfigArgs --admin %q" $envoyAdmin) (regexFind "[0-9]+$" $envoyAdmin | int)) -}}
{{- end -}}
{{- $ports = append $ports (list "sidecar.app.port" (int .Values.sidecar.app.port)) -}}
{{- $ports = append $ports (list "sidecar.envoy.port" (int .Values.sidecar.envoy.port)) -}}
{{- end -}}
{{- toYaml $ports -}}
{{- end -}}

{{/*
The tenantgate config file: the config sections of the values, as they are, plus what depends on
the pod (listen addresses, the signing-key files).
*/}}
{{- define "tenantgate.config" -}}
{{- $listen := deepCopy .Values.listen -}}
{{- /* listenHost, not 127.0.0.1: kubelet's gRPC probes and Prometheus come in on the pod IP. */ -}}
{{- $_ := set $listen "grpc" (include "tenantgate.listenAddress" (list . .Values.ports.grpc)) -}}
{{- if .Values.metrics.enabled -}}
{{- $_ := set $listen "metrics" (include "tenantgate.listenAddress" (list . .Values.ports.metrics)) -}}
{{- else -}}
{{- $_ := set $listen "metrics" nil -}}
{{- end -}}
{{- if eq .Values.mode "sidecar" -}}
{{- $_ := set $listen "uds" (include "tenantgate.socketPath" .) -}}
{{- end -}}
{{- if .Values.tls.enabled -}}
{{- /* The Secret's files sit beside the config (tenantgate.volumes): relative paths, as keys/<id>.
    Kubelet's gRPC probes speak no TLS: they get a plaintext listener serving health alone. */ -}}
{{- $tls := dict "cert" "tls/tls.crt" "key" "tls/tls.key" -}}
{{- if .Values.tls.clientAuth -}}
{{- $_ := set $tls "client_ca" "tls/ca.crt" -}}
{{- end -}}
{{- $_ := set $listen "tls" $tls -}}
{{- $_ := set $listen "health" (include "tenantgate.listenAddress" (list . .Values.ports.health)) -}}
{{- end -}}
{{- $keys := list -}}
{{- range .Values.signingKeys.keyIds -}}
{{- $keys = append $keys (dict "id" . "secret" (dict "fromFile" (printf "keys/%s" .))) -}}
{{- end -}}
{{- $context := deepCopy .Values.context -}}
{{- $_ := set $context "keys" $keys -}}
{{- $config := dict "listen" $listen "context" $context -}}
{{- range $section := list "issuers" "credentials" "tenants" "policy" "quota" "audit" -}}
{{- $_ := set $config $section (index $.Values $section) -}}
{{- end -}}
{{- /* Sections that are off unless configured: left out while empty. */ -}}
{{- range $section := list "api_keys" "admin" -}}
{{- with index $.Values $section -}}
{{- $_ := set $config $section . -}}
{{- end -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{- define "tenantgate.configChecksum" -}}
{{- include "tenantgate.config" . | sha256sum -}}
{{- end -}}

{{/*
Volumes the tenantgate container needs (list items). Config, signing keys and the tls Secret share
one projected volume, so the keys sit beside the config (keys/<id>, tls/) and the config refers to
them relatively. Kubelet updates a projected Secret in place (a new ..data), so a renewed
certificate reaches tenantgate's periodic re-read with no restart.
*/}}
{{- define "tenantgate.volumes" -}}
- name: tenantgate-config
  projected:
    defaultMode: 0440
    sources:
      - configMap:
          name: {{ include "tenantgate.fullname" . }}
          items: [{key: config.yaml, path: config.yaml}]
      - secret:
          name: {{ .Values.signingKeys.existingSecret }}
          items:
          {{- range .Values.signingKeys.keyIds }}
            - {key: {{ . | quote }}, path: {{ printf "keys/%s" . | quote }}}
          {{- end }}
      {{- if .Values.tls.enabled }}
      - secret:
          name: {{ .Values.tls.existingSecret }}
          items:
            - {key: tls.crt, path: tls/tls.crt}
            - {key: tls.key, path: tls/tls.key}
            {{- if .Values.tls.clientAuth }}
            - {key: ca.crt, path: tls/ca.crt}
            {{- end }}
      {{- end }}
- name: tenantgate-tmp
  emptyDir: {medium: Memory, sizeLimit: 16Mi}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tenantgate.volumeMounts" -}}
- {name: tenantgate-config, mountPath: {{ include "tenantgate.configDir" . }}, readOnly: true}
- {name: tenantgate-tmp, mountPath: /tmp}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tenantgate.env" -}}
{{- range .Values.secretEnv }}
- name: {{ .name | quote }}
  valueFrom:
    secretKeyRef: {name: {{ .secretName | quote }}, key: {{ .key | quote }}}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tenantgate.probes" -}}
{{- /* With tls.enabled the gRPC port speaks TLS only, which kubelet's gRPC probes do not. */ -}}
{{- $port := ternary .Values.ports.health .Values.ports.grpc .Values.tls.enabled -}}
{{- $grpc := dict "port" (int $port) "service" .Values.probes.service -}}
startupProbe:
  grpc: {{ toJson $grpc }}
  {{- toYaml .Values.probes.startup | nindent 2 }}
livenessProbe:
  grpc: {{ toJson $grpc }}
  {{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  grpc: {{ toJson $grpc }}
  {{- toYaml .Values.probes.readiness | nindent 2 }}
{{- end -}}

{{/*
The tenantgate container (one list item). Called with (dict "root" $ "portPrefix" "" ) for
standalone, "tg-" in sidecar mode where port names share the pod with the application's.
*/}}
{{- define "tenantgate.container" -}}
{{- $root := .root -}}
- name: tenantgate
  image: {{ include "tenantgate.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  {{- if .sidecar }}
  restartPolicy: Always
  {{- end }}
  args: ["--config", "{{ include "tenantgate.configDir" $root }}/config.yaml"]
  ports:
    - {name: {{ .portPrefix }}grpc, containerPort: {{ $root.Values.ports.grpc }}, protocol: TCP}
    {{- if $root.Values.metrics.enabled }}
    - {name: {{ .portPrefix }}metrics, containerPort: {{ $root.Values.ports.metrics }}, protocol: TCP}
    {{- end }}
    {{- if $root.Values.tls.enabled }}
    - {name: {{ .portPrefix }}health, containerPort: {{ $root.Values.ports.health }}, protocol: TCP}
    {{- end }}
  env:
    - {name: PYTHONDONTWRITEBYTECODE, value: "1"}
    {{- with include "tenantgate.env" $root }}
    {{- . | nindent 4 }}
    {{- end }}
  {{- include "tenantgate.probes" $root | nindent 2 }}
  {{- if and (not .sidecar) $root.Values.preStopSleepSeconds }}
  # On SIGTERM gRPC stops taking new calls at once; the callers' Envoys keep sending here until
  # the endpoint update reaches them (their Checks would fail, 503). Wait that out first.
  lifecycle:
    preStop:
      exec: {command: ["sleep", {{ $root.Values.preStopSleepSeconds | int | toString | quote }}]}
  {{- end }}
  resources:
    {{- toYaml $root.Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  volumeMounts:
    {{- include "tenantgate.volumeMounts" $root | nindent 4 }}
    {{- if .sidecar }}
    - {name: tenantgate-socket, mountPath: {{ $root.Values.sidecar.socketDir }}}
    {{- end }}
{{- end -}}
