{{/* Names, labels and the values every template derives from. */}}

{{- define "recserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "recserve.fullname" -}}
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

{{- define "recserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "recserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "recserve.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "recserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: recserve
{{- end -}}

{{/* Labels of objects that are not the operator's (list root component): the same set, with
their own component, so no selector of the operator's matches them. */}}
{{- define "recserve.componentLabels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "recserve.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: recserve
{{- end -}}

{{- define "recserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "recserve.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Namespaces the operator watches in `namespaces` scope (a list; the release namespace by default). */}}
{{- define "recserve.watchedNamespaces" -}}
{{- $ns := .Values.watch.namespaces | default (list .Release.Namespace) -}}
{{- toJson (uniq $ns) -}}
{{- end -}}

{{- define "recserve.clusterScope" -}}
{{- if eq .Values.watch.scope "cluster" -}}true{{- end -}}
{{- end -}}

{{- define "recserve.peeringName" -}}
{{- default (include "recserve.fullname" .) .Values.peering.name -}}
{{- end -}}

{{/* repository:tag or repository@digest; the tag defaults to the chart's appVersion. */}}
{{- define "recserve.image" -}}
{{- $img := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* Names of cluster-scoped objects carry the release namespace, so two releases never collide. */}}
{{- define "recserve.clusterObjectName" -}}
{{- printf "%s-%s" .Release.Namespace (include "recserve.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "recserve.webhookConfigurationName" -}}
{{- .Values.contract.webhookConfigurationName -}}
{{- end -}}

{{- define "recserve.webhookServiceName" -}}
{{- printf "%s-webhook" (include "recserve.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "recserve.webhookSecretName" -}}
{{- if eq .Values.webhook.certificate.source "secret" -}}
{{- required "webhook.certificate.secretName is required when webhook.certificate.source is secret" .Values.webhook.certificate.secretName -}}
{{- else -}}
{{- printf "%s-webhook-tls" (include "recserve.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Values that cannot be expressed in values.schema.json. */}}
{{- define "recserve.validate" -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.peering.enabled) -}}
{{- fail "operator.replicas > 1 needs peering.enabled: without peering every replica would reconcile" -}}
{{- end -}}
{{- if and (eq .Values.watch.scope "cluster") .Values.watch.namespaces -}}
{{- fail "watch.namespaces is only used with watch.scope=namespaces; clear it for the cluster scope" -}}
{{- end -}}
{{- end -}}

{{/* RECSERVE_NETWORK_POLICY: who may reach each model's Ray pods (JSON; see settings.py).
The operator's own pods are one of the peers: they scrape the serving apps' /metrics. */}}
{{- define "recserve.networkPolicyPeers" -}}
{{- $operator := dict
  "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" .Release.Namespace))
  "podSelector" (dict "matchLabels" (include "recserve.selectorLabels" . | fromYaml)) -}}
{{- $np := .Values.networkPolicy -}}
{{- toJson (dict
  "servingClients" $np.servingClients
  "kuberay" $np.kuberay
  "metrics" $np.metrics
  "operator" (list $operator)) -}}
{{- end -}}

{{/* The retrain pods' ServiceAccount (in each model namespace); empty: the namespace's default. */}}
{{- define "recserve.trainerServiceAccountName" -}}
{{- if .Values.training.serviceAccount.create -}}
{{- default (printf "%s-trainer" (include "recserve.fullname" .) | trunc 63 | trimSuffix "-") .Values.training.serviceAccount.name -}}
{{- else -}}
{{- .Values.training.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The pseudonymization key Secret routers and retrains mount (key `key`). */}}
{{- define "recserve.pseudonymSecretName" -}}
{{- default (printf "%s-pseudonym-key" (include "recserve.fullname" .) | trunc 63 | trimSuffix "-") .Values.privacy.pseudonymKey.existingSecret -}}
{{- end -}}

{{/* Namespaces that get the chart's per-namespace objects of models (trainer account, key):
the watched ones, or the release namespace in `cluster` scope, where others are the user's. */}}
{{- define "recserve.modelNamespaces" -}}
{{- if include "recserve.clusterScope" . -}}
{{- toJson (list .Release.Namespace) -}}
{{- else -}}
{{- include "recserve.watchedNamespaces" . -}}
{{- end -}}
{{- end -}}
