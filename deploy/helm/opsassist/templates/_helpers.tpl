{{/* Labels every object carries. */}}
{{- define "opsassist.labels" -}}
app.kubernetes.io/part-of: opsassist
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* Argo CD sync wave annotation: include "opsassist.wave" (list $ "config") */}}
{{- define "opsassist.wave" -}}
{{- $root := index . 0 -}}
argocd.argoproj.io/sync-wave: {{ index $root.Values.syncWaves (index . 1) | quote }}
{{- end -}}

{{/* image reference of one of the project's images: include "opsassist.image" (list $ "chat") */}}
{{- define "opsassist.image" -}}
{{- $root := index . 0 -}}
{{- $image := index $root.Values.images (index . 1) -}}
{{- if or (not $image.tag) (eq (toString $image.tag) "latest") -}}
{{- fail (printf "images.%s.tag must be pinned" (index . 1)) -}}
{{- end -}}
{{ $root.Values.images.registry }}/{{ $image.repository }}:{{ $image.tag }}
{{- end -}}

{{/* The KV path the Vault Agent reads (KV v2 has /data/ in it). */}}
{{- define "opsassist.vaultAgentPath" -}}
{{- $root := index . 0 -}}
{{- $vault := $root.Values.secrets.vault -}}
{{- if eq $vault.version "v2" -}}
{{ $vault.path }}/data/{{ index . 1 }}
{{- else -}}
{{ $vault.path }}/{{ index . 1 }}
{{- end -}}
{{- end -}}

{{/*
Vault Agent injector annotations for a pod whose secret (values .secrets.chat / .openWebui)
becomes /vault/secrets/<name>.env: one shell-quoted `export KEY='value'` line per declared key.
include "opsassist.vaultAgentAnnotations" (list $ $.Values.secrets.chat)
*/}}
{{- define "opsassist.vaultAgentAnnotations" -}}
{{- $root := index . 0 -}}
{{- $secret := index . 1 -}}
{{- $path := include "opsassist.vaultAgentPath" (list $root $secret.vaultKey) -}}
{{- $data := ternary ".Data.data" ".Data" (eq $root.Values.secrets.vault.version "v2") -}}
vault.hashicorp.com/agent-inject: "true"
vault.hashicorp.com/agent-pre-populate-only: "true"
vault.hashicorp.com/role: {{ $root.Values.secrets.vault.role | quote }}
vault.hashicorp.com/auth-path: {{ printf "auth/%s" $root.Values.secrets.vault.authMountPath | quote }}
vault.hashicorp.com/agent-inject-secret-{{ $secret.name }}.env: {{ $path | quote }}
vault.hashicorp.com/agent-inject-template-{{ $secret.name }}.env: |
  {{ "{{" }}- with secret {{ $path | quote }} {{ "}}" }}
  {{- range $secret.keys }}
  export {{ . }}='{{ "{{" }} index {{ $data }} {{ . | quote }} | replaceAll "'" "'\\''" {{ "}}" }}'
  {{- end }}
  {{ "{{" }}- end {{ "}}" }}
{{- end -}}

{{/*
The container command: in vaultAgent mode the injected env file is sourced first.
include "opsassist.command" (list $ $.Values.chat.command $.Values.secrets.chat.name)
*/}}
{{- define "opsassist.command" -}}
{{- $root := index . 0 -}}
{{- $command := index . 1 -}}
{{- if eq $root.Values.secrets.provider "vaultAgent" -}}
{{- $quoted := list -}}
{{- range $command }}{{ $quoted = append $quoted (squote .) }}{{ end -}}
{{ list "/bin/sh" "-c" (printf ". /vault/secrets/%s.env && exec %s" (index . 2) (join " " $quoted)) | mustToRawJson }}
{{- else -}}
{{ $command | mustToRawJson }}
{{- end -}}
{{- end -}}
