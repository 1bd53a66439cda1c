{{/* Chart name. */}}
{{- define "cls.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-wide full name. */}}
{{- define "cls.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "cls.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "cls.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The components: values key → binary and component name. */}}
{{- define "cls.components" -}}
apiGateway: api-gateway
statusAggregator: status-aggregator
reconcileScheduler: reconcile-scheduler
eventPublisher: event-publisher
{{- end -}}

{{/* Name of a component's objects: (dict "root" $ "component" "api-gateway"). */}}
{{- define "cls.componentName" -}}
{{- printf "%s-%s" (include "cls.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Kubernetes recommended labels. */}}
{{- define "cls.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "cls.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: cls
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of a component: (dict "root" $ "component" "api-gateway"). */}}
{{- define "cls.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cls.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cls.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cls.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "cls.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The database Secret's name. */}}
{{- define "cls.databaseSecret" -}}
{{- default (printf "%s-database" (include "cls.fullname" .)) .Values.database.existingSecret -}}
{{- end -}}

{{/* Peer URL of a component's gRPC port: (dict "root" $ "key" "statusAggregator"). */}}
{{- define "cls.grpcUrl" -}}
{{- $name := index (include "cls.components" .root | fromYaml) .key -}}
{{- $c := index .root.Values.components .key -}}
{{- printf "http://%s:%v" (include "cls.componentName" (dict "root" .root "component" $name)) $c.grpcPort -}}
{{- end -}}

{{/* The environment every service shares (secrets by reference). */}}
{{- define "cls.commonEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "cls.databaseSecret" . }}
      key: {{ .Values.database.existingSecretKey }}
{{- if .Values.grpcAuth.existingSecret }}
- name: GRPC_SHARED_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.grpcAuth.existingSecret }}
      key: {{ .Values.grpcAuth.existingSecretKey }}
{{- end }}
{{- end -}}
