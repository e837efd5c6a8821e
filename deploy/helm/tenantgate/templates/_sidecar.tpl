{{/*
Sidecar mode building blocks. Include them in your own workload to protect it:

  spec:
    template:
      metadata:
        annotations:
          checksum/tenantgate-config: {{ include "tenantgate.configChecksum" . }}
      spec:
        initContainers:
          {{- include "tenantgate.sidecar.initContainers" . | nindent 10 }}
        containers: [your application, listening on localhost:<sidecar.app.port>]
        volumes:
          {{- include "tenantgate.sidecar.volumes" . | nindent 10 }}

Order matters: the bootstrap is rendered first (a plain init container), then tenantgate and Envoy
start as native sidecars (restartPolicy: Always). Kubernetes starts the application only after
each sidecar's startup probe passed, and stops the sidecars after the application on shutdown.
*/}}

{{- define "tenantgate.sidecar.initContainers" -}}
- name: tenantgate-envoy-config
  image: {{ include "tenantgate.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["tenantgate"]
  args:
    - envoy-config
    - {{ include "tenantgate.configDir" . }}/config.yaml
    - --mode
    - sidecar
    - --listen
    - {{ include "tenantgate.listenAddress" (list . .Values.sidecar.envoy.port) | quote }}
    - --upstream
    - {{ printf "127.0.0.1:%d" (int .Values.sidecar.app.port) }}
    {{- /* Only when not the default, so an http1 release renders as before. */}}
    {{- with .Values.sidecar.envoy.upstreamProtocol }}
    {{- if ne . "http1" }}
    - --upstream-protocol
    - {{ . }}
    {{- end }}
    {{- end }}
    {{- if .Values.sidecar.envoy.websocket }}
    - --websocket
    {{- end }}
    # Not 127.0.0.1:9901: the app shares the pod's loopback, and an SSRF in it could raise
    # Envoy's log level (every token logged) or POST /quitquitquit. The socket's directory is
    # mounted in tenantgate and Envoy only, never in the app's container.
    - --admin
    - {{ printf "unix:%s" (include "tenantgate.envoyAdminSocket" .) }}
    - --output
    - {{ include "tenantgate.envoyBootstrap" . }}
    {{- range .Values.sidecar.envoyConfigArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - {name: PYTHONDONTWRITEBYTECODE, value: "1"}
    {{- with include "tenantgate.env" . }}
    {{- . | nindent 4 }}
    {{- end }}
  resources:
    requests: {cpu: 50m, memory: 64Mi}
    limits: {memory: 128Mi}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    {{- include "tenantgate.volumeMounts" . | nindent 4 }}
    - {name: envoy-bootstrap, mountPath: {{ dir (include "tenantgate.envoyBootstrap" .) }}}
{{ include "tenantgate.container" (dict "root" . "portPrefix" "tg-" "sidecar" true) }}
- name: envoy
  image: {{ printf "%s:%s" .Values.sidecar.envoy.image.repository .Values.sidecar.envoy.image.tag }}
  imagePullPolicy: {{ .Values.sidecar.envoy.image.pullPolicy }}
  restartPolicy: Always
  command: ["envoy"]
  # No hot restart: it needs shared memory and a writable root; Kubernetes restarts instead.
  # --concurrency: without it Envoy starts a worker per hardware thread of the node, whatever
  # the container's CPU limit (dozens of threads, connections and buffers on a large node).
  args: ["-c", "{{ include "tenantgate.envoyBootstrap" . }}", "--disable-hot-restart",
         "--concurrency", {{ .Values.sidecar.envoy.concurrency | int | toString | quote }},
         "--log-level", {{ .Values.sidecar.envoy.logLevel | quote }}]
  ports:
    - {name: envoy-http, containerPort: {{ .Values.sidecar.envoy.port }}, protocol: TCP}
  startupProbe:
    tcpSocket: {port: envoy-http}
    periodSeconds: 1
    failureThreshold: 30
  readinessProbe:
    tcpSocket: {port: envoy-http}
    periodSeconds: 5
  resources:
    {{- toYaml .Values.sidecar.envoy.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - {name: envoy-bootstrap, mountPath: {{ dir (include "tenantgate.envoyBootstrap" .) }}, readOnly: true}
    # The UDS tenantgate listens on (both containers run as the pod's user, so Envoy may
    # connect) and Envoy's admin socket.
    - {name: tenantgate-socket, mountPath: {{ .Values.sidecar.socketDir }}}
{{- end -}}

{{- define "tenantgate.sidecar.volumes" -}}
{{ include "tenantgate.volumes" . }}
- name: tenantgate-socket
  emptyDir: {medium: Memory, sizeLimit: 1Mi}
- name: envoy-bootstrap
  emptyDir: {medium: Memory, sizeLimit: 1Mi}
{{- end -}}
