{{/* Names: <release>-api, <release>-gateway, <release>-worker-control, ... (or fullnameOverride as the prefix). */}}
{{- define "bud-foundry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{- define "bud-foundry.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end }}

{{- define "bud-foundry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bud-foundry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bud-foundry.labels" -}}
{{ include "bud-foundry.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bud-foundry
{{- range $key, $value := .Values.labels }}
{{ $key }}: {{ $value | quote }}
{{- end }}
{{- end }}

{{/* Labels of one component: (dict "root" $ "component" "api"). */}}
{{- define "bud-foundry.componentLabels" -}}
{{ include "bud-foundry.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "bud-foundry.componentSelector" -}}
{{ include "bud-foundry.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "bud-foundry.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end }}

{{- define "bud-foundry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-bud-foundry" (include "bud-foundry.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end }}

{{- define "bud-foundry.secretName" -}}
{{- default (printf "%s-secrets" (include "bud-foundry.fullname" .)) .Values.secrets.existingSecret -}}
{{- end }}

{{/* KEDA when asked for, or (auto) when the cluster serves its ScaledObject. */}}
{{- define "bud-foundry.useKeda" -}}
{{- $mode := .Values.workers.autoscaling.keda -}}
{{- if and .Values.workers.autoscaling.enabled (or (eq $mode "always") (and (eq $mode "auto") (.Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject"))) -}}
true
{{- end -}}
{{- end }}

{{- define "bud-foundry.temporalTlsFiles" -}}
{{- $tls := .Values.temporal.tls -}}
{{- if and $tls.enabled $tls.existingSecret (or $tls.caKey $tls.certKey $tls.keyKey) -}}
true
{{- end -}}
{{- end }}

{{/* Rolls every pod when the settings or the chart's own Secret change. */}}
{{- define "bud-foundry.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secrets: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/* The parts of a pod every component shares. */}}
{{- define "bud-foundry.podCommon" -}}
serviceAccountName: {{ include "bud-foundry.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{- define "bud-foundry.containerCommon" -}}
image: {{ include "bud-foundry.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
envFrom:
  - configMapRef:
      name: {{ include "bud-foundry.fullname" . }}-settings
  - secretRef:
      name: {{ include "bud-foundry.secretName" . }}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
volumeMounts:
  - name: tmp
    mountPath: /tmp
  - name: state
    mountPath: /var/lib/bud
  {{- if include "bud-foundry.temporalTlsFiles" . }}
  - name: temporal-tls
    mountPath: /etc/bud/temporal-tls
    readOnly: true
  {{- end }}
{{- end }}

{{- define "bud-foundry.volumes" -}}
volumes:
  - name: tmp
    emptyDir: {}
  - name: state
    emptyDir: {}
  {{- if include "bud-foundry.temporalTlsFiles" . }}
  {{- $tls := .Values.temporal.tls }}
  - name: temporal-tls
    secret:
      secretName: {{ $tls.existingSecret }}
      items:
        {{- if $tls.caKey }}
        - {key: {{ $tls.caKey | quote }}, path: ca.crt}
        {{- end }}
        {{- if $tls.certKey }}
        - {key: {{ $tls.certKey | quote }}, path: tls.crt}
        {{- end }}
        {{- if $tls.keyKey }}
        - {key: {{ $tls.keyKey | quote }}, path: tls.key}
        {{- end }}
  {{- end }}
{{- end }}

{{/* Scheduling of one component: (dict "root" $ "values" .Values.api "component" "api"). Replicas prefer
different nodes, so one node going away takes at most one of them. */}}
{{- define "bud-foundry.scheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
affinity:
  {{- with .values.affinity.nodeAffinity }}
  nodeAffinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .values.affinity.podAntiAffinity }}
  podAntiAffinity:
    {{- toYaml .values.affinity.podAntiAffinity | nindent 4 }}
  {{- else }}
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "bud-foundry.componentSelector" (dict "root" .root "component" .component) | nindent 14 }}
  {{- end }}
{{- end }}

{{/* Rules across fields that the schema cannot state; each failure names the fields. */}}
{{- define "bud-foundry.validate" -}}
{{- $scaling := .Values.gateway.autoscaling -}}
{{- if and $scaling.enabled (gt (int $scaling.minReplicas) (int $scaling.maxReplicas)) -}}
{{- fail "gateway.autoscaling.minReplicas must not exceed gateway.autoscaling.maxReplicas" -}}
{{- end -}}
{{- range $role := list "control" "optimizer" -}}
{{- $worker := get $.Values.workers $role -}}
{{- if gt (int $worker.minReplicas) (int $worker.maxReplicas) -}}
{{- fail (printf "workers.%s.minReplicas must not exceed workers.%s.maxReplicas" $role $role) -}}
{{- end -}}
{{- end -}}
{{- $tls := .Values.temporal.tls -}}
{{- if and $tls.existingSecret (not $tls.enabled) -}}
{{- fail "temporal.tls.existingSecret is set but temporal.tls.enabled is false" -}}
{{- end -}}
{{- if and $tls.existingSecret (ne (empty $tls.certKey) (empty $tls.keyKey)) -}}
{{- fail "temporal.tls.certKey and temporal.tls.keyKey go together (mutual TLS needs both, server TLS neither)" -}}
{{- end -}}
{{- if eq .Values.taskQueues.control .Values.taskQueues.optimizer -}}
{{- fail "taskQueues.control and taskQueues.optimizer must differ" -}}
{{- end -}}
{{- with .Values.secrets -}}
{{- if and .existingSecret (or .databaseUrl .redisUrl .s3AccessKey .s3SecretKey .secretKey) -}}
{{- fail "secrets.existingSecret is set: leave secrets.databaseUrl, redisUrl, s3AccessKey, s3SecretKey and secretKey empty (they would be ignored)" -}}
{{- end -}}
{{- end -}}
{{- end }}
