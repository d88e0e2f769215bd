{{/*
The guardian sidecar, for an agent's own pod: the gateway image run for that one agent
(SIDECAR_AGENT_ID), enforcing the signed policy bundle, listening on the pod's loopback only, and
sending heartbeats with its audit log to the control plane. An init container verifies the bundle
first, so a pod with a bundle that does not verify never starts. In an agent's Deployment:

  initContainers:
    {{- include "meshguard.guardian.initContainer" (dict "root" $) | nindent 8 }}
  containers:
    - name: my-agent            # calls http://127.0.0.1:<guardian.port>/proxy/…
    {{- include "meshguard.guardian.container" (dict "root" $ "agentId" "agent_…" "tokenSecret" "my-agent-token" "proxyTarget" "http://upstream") | nindent 8 }}
  volumes:
    {{- include "meshguard.guardian.volumes" (dict "root" $ "agentId" "agent_…") | nindent 8 }}

The token Secret (key: token) reaches the sidecar as an environment variable (secretKeyRef):
podman kube play, which runs the chart on one-host sites, cannot mount Secret volumes. For the
same host, the sidecar's cache and tmp volumes are named after its agent: podman makes a volume
of an emptyDir under its name, kept after `kube down`, so two agents' sidecars under one name
would share one cache (its origin names one agent, and the other's heartbeats are refused).

templates/example-agent.yaml does exactly this.
*/}}

{{- define "meshguard.guardian.bundleConfigMap" -}}
{{- .Values.guardian.bundleConfigMap | default .Values.policyBundle.configMap | required "guardian.bundleConfigMap (or policyBundle.configMap) is required: the ConfigMap with policy-bundle.json and its .minisig" -}}
{{- end -}}

{{- define "meshguard.guardian.bundleKeyConfigMap" -}}
{{- .Values.guardian.bundleKeyConfigMap | default .Values.policyBundle.publicKeyConfigMap | required "guardian.bundleKeyConfigMap (or policyBundle.publicKeyConfigMap) is required: the ConfigMap with the key that signs the bundle" -}}
{{- end -}}

{{- define "meshguard.guardian.gatewayUrl" -}}
{{- .Values.guardian.gatewayUrl | default (printf "%s://%s.%s.svc:%v" (ternary "https" "http" .Values.tls.enabled) (include "meshguard.fullname" .) .Release.Namespace .Values.service.port) -}}
{{- end -}}

{{- define "meshguard.guardian.bundleEnv" -}}
- {name: POLICY_BUNDLE, value: /etc/meshguard/guardian-bundle/policy-bundle.json}
- {name: POLICY_BUNDLE_PUBKEY, value: /etc/meshguard/guardian-bundle-key/{{ .Values.guardian.bundleKeyName }}}
{{- end -}}

{{- define "meshguard.guardian.bundleMounts" -}}
- {name: guardian-bundle, mountPath: /etc/meshguard/guardian-bundle, readOnly: true}
- {name: guardian-bundle-key, mountPath: /etc/meshguard/guardian-bundle-key, readOnly: true}
{{- end -}}

{{/* The sidecar's emptyDir volumes' names: `<what>-<10 hex of the agent id's SHA-256>`. */}}
{{- define "meshguard.guardian.volumeName" -}}
{{- printf "%s-%s" .what (sha256sum (required "the guardian sidecar's volumes need the agent's id (agentId)" .agentId) | trunc 10) -}}
{{- end -}}

{{- define "meshguard.guardian.initContainer" -}}
{{- $root := .root -}}
- name: guardian-verify-bundle
  image: {{ include "meshguard.image" $root | quote }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  args: ["--check-policy-bundle"]
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  env:
    {{- include "meshguard.guardian.bundleEnv" $root | nindent 4 }}
  resources:
    {{- toYaml $root.Values.guardian.resources | nindent 4 }}
  volumeMounts:
    {{- include "meshguard.guardian.bundleMounts" $root | nindent 4 }}
{{- end -}}

{{- define "meshguard.guardian.container" -}}
{{- $root := .root -}}
- name: guardian
  image: {{ include "meshguard.image" $root | quote }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  env:
    - {name: SIDECAR_AGENT_ID, value: {{ required "the guardian sidecar needs the agent's id (agentId)" .agentId | quote }}}
    # Loopback only: the pod is the agent's identity, so nothing outside the pod may call it.
    - {name: HOST, value: "127.0.0.1"}
    - {name: PORT, value: {{ $root.Values.guardian.port | quote }}}
    - {name: MODE, value: {{ $root.Values.mode | quote }}}
    - {name: CACHE_DIR, value: /cache}
    - {name: TMPDIR, value: /tmp}
    - {name: GATEWAY_URL, value: {{ include "meshguard.guardian.gatewayUrl" $root | quote }}}
    - name: SIDECAR_AGENT_TOKEN
      valueFrom: {secretKeyRef: {name: {{ required "the guardian sidecar needs a Secret with the agent's token (tokenSecret, key: token)" .tokenSecret }}, key: token}}
    - {name: BUNDLE_SYNC_INTERVAL, value: {{ $root.Values.guardian.syncIntervalSeconds | quote }}}
    # The sidecar's entries are signed where they are made: they are redacted there too.
    - {name: AUDIT_REDACTION, value: {{ $root.Values.audit.redaction | quote }}}
    {{- with .proxyTarget }}
    - {name: PROXY_TARGET, value: {{ . | quote }}}
    {{- end }}
    {{- if $root.Values.caBundle.configMap }}
    - {name: CA_BUNDLE_FILE, value: /etc/meshguard/ca/{{ $root.Values.caBundle.key }}}
    {{- end }}
    {{- include "meshguard.guardian.bundleEnv" $root | nindent 4 }}
  # It listens on the pod's loopback only, where the kubelet's HTTP probes (sent to the pod's
  # address) cannot reach: the gateway binary asks it from inside (`--probe`). /health is its
  # own database and bundle, never the control plane: a sidecar cut off from it keeps enforcing.
  {{- $url := printf "http://127.0.0.1:%v" $root.Values.guardian.port }}
  startupProbe:
    exec: {command: ["/usr/local/bin/meshguard-gateway", "--probe", {{ printf "%s/health" $url | quote }}]}
    periodSeconds: 2
    failureThreshold: 60
  readinessProbe:
    exec: {command: ["/usr/local/bin/meshguard-gateway", "--probe", {{ printf "%s/ready" $url | quote }}]}
    periodSeconds: 10
  livenessProbe:
    exec: {command: ["/usr/local/bin/meshguard-gateway", "--probe", {{ printf "%s/health" $url | quote }}]}
    periodSeconds: 15
  resources:
    {{- toYaml $root.Values.guardian.resources | nindent 4 }}
  volumeMounts:
    - {name: {{ include "meshguard.guardian.volumeName" (dict "what" "guardian-cache" "agentId" .agentId) }}, mountPath: /cache}
    - {name: {{ include "meshguard.guardian.volumeName" (dict "what" "guardian-tmp" "agentId" .agentId) }}, mountPath: /tmp}
    {{- if $root.Values.caBundle.configMap }}
    - {name: guardian-ca-bundle, mountPath: /etc/meshguard/ca, readOnly: true}
    {{- end }}
    {{- include "meshguard.guardian.bundleMounts" $root | nindent 4 }}
{{- end -}}

{{- define "meshguard.guardian.volumes" -}}
{{- $root := .root -}}
- name: guardian-bundle
  configMap: {name: {{ include "meshguard.guardian.bundleConfigMap" $root }}}
- name: guardian-bundle-key
  configMap: {name: {{ include "meshguard.guardian.bundleKeyConfigMap" $root }}}
# The sidecar's audit log until a heartbeat hands it over, its checkpoint key and its origin.
# An emptyDir loses what the last heartbeat did not carry if the pod is lost (a stopped pod
# sends a final heartbeat); guardian.persistentCacheClaim keeps it.
- name: {{ include "meshguard.guardian.volumeName" (dict "what" "guardian-cache" "agentId" .agentId) }}
  {{- if $root.Values.guardian.persistentCacheClaim }}
  persistentVolumeClaim: {claimName: {{ $root.Values.guardian.persistentCacheClaim }}}
  {{- else }}
  emptyDir: {}
  {{- end }}
- name: {{ include "meshguard.guardian.volumeName" (dict "what" "guardian-tmp" "agentId" .agentId) }}
  emptyDir: {}
{{- if $root.Values.caBundle.configMap }}
- name: guardian-ca-bundle
  configMap: {name: {{ $root.Values.caBundle.configMap }}}
{{- end }}
{{- end -}}
