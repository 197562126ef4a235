{{/*
Naming and labels follow the podinfo chart: name / fullname / chart / labels / selectorLabels.
Most helpers take a context dict: {root: $, name: <service or component name>, svc: <merged values>}.
*/}}

{{- define "parley.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "parley.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "parley.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Resource name of one component: <fullname>-<name> (also the in-cluster DNS name of its Service).
Over 63 characters, a plain cut would give `notification` and `notification-migrate` (or the
three dashboards) one name: the fullname is shortened instead and an 8-character hash of the whole
name keeps it unique, with the component name kept whole at the end.
*/}}
{{- define "parley.componentName" -}}
{{- $full := printf "%s-%s" (include "parley.fullname" .root) .name }}
{{- if le (len $full) 63 }}
{{- $full }}
{{- else }}
{{- $hash := sha256sum $full | trunc 8 }}
{{- $keep := sub 63 (add (len .name) 10) | int }}
{{- if lt $keep 8 }}
{{- printf "%s-%s" ($full | trunc 54 | trimSuffix "-") $hash }}
{{- else }}
{{- printf "%s-%s-%s" (include "parley.fullname" .root | trunc $keep | trimSuffix "-") $hash .name }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels shared by every pod of the release: the default-deny NetworkPolicy selects these. */}}
{{- define "parley.releaseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "parley.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "parley.selectorLabels" -}}
{{ include "parley.releaseSelectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "parley.labels" -}}
helm.sh/chart: {{ include "parley.chart" .root }}
{{ include "parley.selectorLabels" . }}
app.kubernetes.io/part-of: parley
{{- with .root.Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* Shallow merge of two maps, (list base overlay), as YAML; unlike mergeOverwrite, a false / 0 / "" in overlay wins. */}}
{{- define "parley.overlay" -}}
{{- $out := deepCopy (index . 0 | default dict) }}
{{- range $key, $value := (index . 1 | default dict) }}{{ $_ := set $out $key $value }}{{ end }}
{{- toYaml $out }}
{{- end }}

{{/*
A service's values with the global defaults filled in, as YAML (use with fromYaml).
Maps (env, resources, podAnnotations, podLabels, nodeSelector, shutdown) are merged, the
service winning; lists and affinity are taken from the service when set, else from global.
*/}}
{{- define "parley.serviceValues" -}}
{{- $g := .root.Values.global }}
{{- $svc := deepCopy .svc }}
{{- $_ := set $svc "env" (include "parley.overlay" (list $g.env $svc.env) | fromYaml) }}
{{- $_ := set $svc "resources" (mergeOverwrite (deepCopy ($g.resources | default dict)) ($svc.resources | default dict)) }}
{{- $_ := set $svc "podAnnotations" (include "parley.overlay" (list $g.podAnnotations $svc.podAnnotations) | fromYaml) }}
{{- $_ := set $svc "podLabels" (include "parley.overlay" (list $g.podLabels $svc.podLabels) | fromYaml) }}
{{- $_ := set $svc "nodeSelector" (include "parley.overlay" (list $g.nodeSelector $svc.nodeSelector) | fromYaml) }}
{{- $_ := set $svc "shutdown" (include "parley.overlay" (list $g.shutdown $svc.shutdown) | fromYaml) }}
{{- $_ := set $svc "tolerations" ($svc.tolerations | default $g.tolerations | default list) }}
{{- $_ := set $svc "affinity" ($svc.affinity | default $g.affinity | default dict) }}
{{- $_ := set $svc "priorityClassName" ($svc.priorityClassName | default $g.priorityClassName | default "") }}
{{- toYaml $svc }}
{{- end }}

{{/* Container image: [registry/]repository[:tag][@digest]; the tag defaults to global.image.tag, then appVersion. */}}
{{- define "parley.image" -}}
{{- $g := .root.Values.global.image }}
{{- $image := .svc.image }}
{{- $tag := $image.tag | default $g.tag | default .root.Chart.AppVersion | toString }}
{{- $ref := $image.repository }}
{{- with $g.registry }}{{ $ref = printf "%s/%s" (trimSuffix "/" .) $ref }}{{ end }}
{{- with $tag }}{{ $ref = printf "%s:%s" $ref . }}{{ end }}
{{- with $image.digest }}{{ $ref = printf "%s@%s" $ref . }}{{ end }}
{{- $ref }}
{{- end }}

{{- define "parley.imagePullPolicy" -}}
{{- .svc.image.pullPolicy | default .root.Values.global.image.pullPolicy }}
{{- end }}

{{/* An environment value as a string; toJson keeps large integers out of scientific notation. */}}
{{- define "parley.envValue" -}}
{{- if kindIs "string" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "parley.serviceUrl" -}}
{{- $svc := get .root.Values.services .name }}
{{- printf "http://%s:%v" (include "parley.componentName" .) $svc.port }}
{{- end }}

{{/*
Plain (non-secret) environment of a service as a YAML map: values computed from the release,
overridden by global.env, overridden by services.<name>.env. An empty value overrides nothing
and is left out (the services treat an empty variable as unset).
*/}}
{{- define "parley.plainEnv" -}}
{{- $root := .root }}
{{- $g := $root.Values.global }}
{{- $env := dict
  "HOST" "0.0.0.0"
  "PORT" .svc.port
  "OPS_PORT" .svc.opsPort
  "LOG_LEVEL" $g.logLevel
  "SHUTDOWN_DELAY_MS" .svc.shutdown.delayMs
  "SHUTDOWN_GRACE_MS" .svc.shutdown.graceMs
  "AMQP_EXCHANGE" $g.amqp.exchange
  "AMQP_PREFETCH" $g.amqp.prefetch
  "JWT_ISSUER" $g.jwt.issuer
  "JWT_AUDIENCE" $g.jwt.audience
}}
{{- if $g.tracing.otlpEndpoint }}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_ENDPOINT" $g.tracing.otlpEndpoint }}
{{- $_ := set $env "OTEL_TRACES_SAMPLER_ARG" $g.tracing.samplingRatio }}
{{- end }}
{{- if ne .name "auth" }}
{{- $jwks := $g.jwt.jwksUrl | default (printf "%s/auth/.well-known/jwks.json" (include "parley.serviceUrl" (dict "root" $root "name" "auth"))) }}
{{- $_ := set $env "JWKS_URL" $jwks }}
{{- end }}
{{- if eq .name "gateway" }}
{{- /* every other service is an upstream of the gateway */}}
{{- range $upstream := keys $root.Values.services | sortAlpha }}
{{- if ne $upstream "gateway" }}
{{- $_ := set $env (printf "%s_URL" (upper $upstream)) (include "parley.serviceUrl" (dict "root" $root "name" $upstream)) }}
{{- end }}
{{- end }}
{{- if $root.Values.ingress.enabled }}
{{- $_ := set $env "TRUST_PROXY_HOPS" 1 }}
{{- end }}
{{- end }}
{{- range $key, $value := .svc.env }}
{{- if not (or (kindIs "invalid" $value) (eq (toString $value) "")) }}
{{- $_ := set $env $key $value }}
{{- end }}
{{- end }}
{{- $secretKeys := keys (include "parley.secretRefs" . | fromYaml) }}
{{- $out := dict }}
{{- range $key, $value := $env }}
{{- $text := include "parley.envValue" $value }}
{{- if and $text (ne $text "null") (not (has $key $secretKeys)) }}
{{- $_ := set $out $key $text }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* Name of the chart-managed Secret of a service. */}}
{{- define "parley.secretName" -}}
{{- include "parley.componentName" . }}
{{- end }}

{{/* Name of the migration hook's copy of that Secret (and of the hook Job). */}}
{{- define "parley.migrateName" -}}
{{- include "parley.componentName" (dict "root" .root "name" (printf "%s-migrate" .name)) }}
{{- end }}

{{/*
Where each secret variable of a service comes from, as a YAML map variable -> Secret name:
keys of services.<name>.secretEnv from services.<name>.existingSecret, keys of global.secretEnv
from global.existingSecret, and otherwise from the chart-managed Secret.
*/}}
{{- define "parley.secretRefs" -}}
{{- $chartSecret := include "parley.secretName" . }}
{{- $g := .root.Values.global }}
{{- $refs := dict }}
{{- range $key, $_ := $g.secretEnv }}
{{- $_ := set $refs $key ($g.existingSecret | default $chartSecret) }}
{{- end }}
{{- range $key, $_ := .svc.secretEnv }}
{{- $_ := set $refs $key ($.svc.existingSecret | default $chartSecret) }}
{{- end }}
{{- toYaml $refs }}
{{- end }}

{{/* Default of a secret variable when infra.enabled: the URL of the bundled dev server. */}}
{{- define "parley.infraValue" -}}
{{- $root := .root }}
{{- $infra := $root.Values.infra }}
{{- if $infra.enabled }}
{{- $host := dict "root" $root }}
{{- if eq .key "REDIS_URL" }}
{{- printf "redis://%s:6379" (include "parley.componentName" (set $host "name" "redis")) }}
{{- else if eq .key "AMQP_URL" }}
{{- printf "amqp://%s:%s@%s:5672/%%2F" $infra.rabbitmq.username $infra.rabbitmq.password (include "parley.componentName" (set $host "name" "rabbitmq")) }}
{{- else if eq .key "DATABASE_URL" }}
{{- printf "postgres://%s:%s@%s:5432/parley_%s" $infra.postgresql.username $infra.postgresql.password (include "parley.componentName" (set $host "name" "postgresql")) .name }}
{{- else if eq .key "MONGO_URL" }}
{{- printf "mongodb://%s:27017" (include "parley.componentName" (set $host "name" "mongodb")) }}
{{- else if eq .key "SMTP_URL" }}
{{- printf "smtp://%s:1025" (include "parley.componentName" (set $host "name" "mailpit")) }}
{{- else if eq .key "S3_ENDPOINT" }}
{{- printf "http://%s:7070" (include "parley.componentName" (set $host "name" "s3")) }}
{{- else if eq .key "S3_ACCESS_KEY_ID" }}
{{- $infra.s3.accessKeyId }}
{{- else if eq .key "S3_SECRET_ACCESS_KEY" }}
{{- $infra.s3.secretAccessKey }}
{{- end }}
{{- end }}
{{- end }}

{{/* Data of the chart-managed Secret of a service (variables not taken from an existing Secret), as YAML. */}}
{{- define "parley.secretData" -}}
{{- $ctx := . }}
{{- $chartSecret := include "parley.secretName" . }}
{{- $data := dict }}
{{- range $key, $secret := include "parley.secretRefs" . | fromYaml }}
{{- if eq $secret $chartSecret }}
{{- $value := "" }}
{{- if hasKey $ctx.svc.secretEnv $key }}
{{- $value = get $ctx.svc.secretEnv $key }}
{{- else }}
{{- $value = get $ctx.root.Values.global.secretEnv $key }}
{{- end }}
{{- $value = $value | default (include "parley.infraValue" (dict "root" $ctx.root "name" $ctx.name "key" $key)) }}
{{- $_ := set $data $key ($value | toString) }}
{{- end }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{/*
The env list of a service container: plain variables, then secretKeyRefs. `hookSecret`
(optional) points chart-managed references at a copy of the Secret (the migration hook's).
*/}}
{{- define "parley.env" -}}
{{- $ctx := . }}
{{- $chartSecret := include "parley.secretName" . }}
{{- range $key, $value := include "parley.plainEnv" . | fromYaml }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
{{- range $key, $secret := include "parley.secretRefs" . | fromYaml }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ if eq $secret $chartSecret }}{{ $ctx.hookSecret | default $secret }}{{ else }}{{ $secret }}{{ end }}
      key: {{ $key }}
{{- end }}
{{- end }}

{{/* Pod termination budget: must exceed SHUTDOWN_DELAY_MS + SHUTDOWN_GRACE_MS. */}}
{{- define "parley.terminationGracePeriodSeconds" -}}
{{- $needed := div (add .svc.shutdown.delayMs .svc.shutdown.graceMs 999) 1000 }}
{{- if .svc.terminationGracePeriodSeconds }}
{{- if le (int .svc.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "services.%s.terminationGracePeriodSeconds (%v) must exceed shutdown delay + grace (%vs)" .name .svc.terminationGracePeriodSeconds $needed) }}
{{- end }}
{{- .svc.terminationGracePeriodSeconds }}
{{- else }}
{{- add $needed 10 }}
{{- end }}
{{- end }}

{{/* Whether a Deployment is autoscaled / gets a PodDisruptionBudget ("true" or ""). */}}
{{- define "parley.pdbEnabled" -}}
{{- if .svc.pdb.enabled }}
{{- if .svc.autoscaling.enabled }}
{{- if gt (int .svc.autoscaling.minReplicas) 1 }}true{{ end }}
{{- else if gt (int .svc.replicas) 1 }}true{{ end }}
{{- end }}
{{- end }}

{{/* Migrations run as a pre-install/pre-upgrade hook Job, except with the bundled infra, which
does not exist yet when pre-install hooks run: then as an init container of the Deployment. */}}
{{- define "parley.migrationsAsHook" -}}
{{- if not .Values.infra.enabled }}true{{ end }}
{{- end }}

{{- define "parley.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create }}
{{- include "parley.componentName" . }}
{{- else }}
{{- .root.Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{/* The migration container (hook Job or init container). */}}
{{- define "parley.migrateContainer" -}}
- name: migrate
  image: {{ include "parley.image" . | quote }}
  imagePullPolicy: {{ include "parley.imagePullPolicy" . }}
  args: ["migrate"]
  env:
    {{- include "parley.env" . | trim | nindent 4 }}
  resources:
    {{- toYaml (.root.Values.migrations.resources | default .svc.resources) | nindent 4 }}
  securityContext:
    {{- toYaml .root.Values.global.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
{{- end }}

{{/*
Whether to render a Prometheus-operator object: enabled true, or "auto" and the cluster serves
the CRD (Capabilities; pass --api-versions monitoring.coreos.com/v1/<Kind> to `helm template`).
Parameters: root, enabled (the setting), kind.
*/}}
{{- define "parley.monitoringEnabled" -}}
{{- if eq (toString .enabled) "auto" }}
{{- if .root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" .kind) }}true{{ end }}
{{- else if .enabled }}true{{ end }}
{{- end }}
