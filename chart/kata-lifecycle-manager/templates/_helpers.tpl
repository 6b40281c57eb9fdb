{{/*
Names, labels and the parts every klm step shares. Argo's own {{...}}
expressions appear in templates as Helm raw strings ({{`{{...}}`}}).
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "klm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The objects' name: fullnameOverride, else <release>-<chart name>, or just the
release name when it already contains the chart name.
*/}}
{{- define "klm.fullname" -}}
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

{{/* name-version, for the helm.sh/chart label. */}}
{{- define "klm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select this release's objects. */}}
{{- define "klm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "klm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "klm.labels" -}}
helm.sh/chart: {{ include "klm.chart" . }}
{{ include "klm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kata-lifecycle-manager
{{- end }}

{{/* Where the WorkflowTemplate and the ServiceAccount live. */}}
{{- define "klm.argoNamespace" -}}
{{- default .Release.Namespace .Values.argoNamespace }}
{{- end }}

{{/* The ServiceAccount every step runs as. */}}
{{- define "klm.serviceAccountName" -}}
{{- include "klm.fullname" . }}
{{- end }}

{{/* The klm image: by digest when one is given, else by tag (appVersion by default). */}}
{{- define "klm.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString }}
{{- if .Values.image.digest }}
{{- if .Values.image.tag }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- end }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Values that contradict each other or are missing fail the install here, with
the fix in the message (the schema already checked the types).
*/}}
{{- define "klm.validate" -}}
{{- if not (trim .Values.defaults.verificationPod) }}
{{- fail "defaults.verificationPod is required: every upgraded node is verified with your pod before it returns to service. Give it with --set-file defaults.verificationPod=./verification-pod.yaml (see the chart README, \"The verification pod\")." }}
{{- end }}
{{- range $pool, $pod := .Values.verificationPods }}
{{- if not (trim $pod) }}
{{- fail (printf "verificationPods.%s is empty: give the pool's pod YAML (--set-file verificationPods.%s=./pod.yaml), or remove the pool." $pool $pool) }}
{{- end }}
{{- end }}
{{- if and .Values.defaults.nodeTaintValue (not .Values.defaults.nodeTaintKey) }}
{{- fail "defaults.nodeTaintValue is set without defaults.nodeTaintKey: set the taint key too, or drop the value." }}
{{- end }}
{{- if and .Values.defaults.drainEnabled (not .Values.rbac.drain) }}
{{- fail "defaults.drainEnabled is true but rbac.drain is false: the steps could not evict pods. Set rbac.drain=true, or drainEnabled=false." }}
{{- end }}
{{- end }}

{{/*
A workflow parameter: its default value, its description, and, when
`locked`, an enum that allows only the default, so that `argo submit -p`
cannot change it.
Arguments: dict name, value, description, enum (list, optional), locked (the
submitOverrides key that fixes it, when it does).
*/}}
{{- define "klm.parameter" -}}
- name: {{ .name }}
  value: {{ .value | toString | quote }}
  {{- if .locked }}
  enum:
    - {{ .value | toString | quote }}
  {{- else if .enum }}
  enum:
    {{- range .enum }}
    - {{ . | quote }}
    {{- end }}
  {{- end }}
  {{- if .locked }}
  description: {{ printf "%s Fixed by the chart (submitOverrides.%s is false)." .description .locked | quote }}
  {{- else }}
  description: {{ .description | quote }}
  {{- end }}
{{- end }}

{{/*
The settings every klm step template shares: its deadline and retries.
*/}}
{{- define "klm.stepSettings" -}}
activeDeadlineSeconds: {{ .Values.workflow.stepDeadlineSeconds }}
retryStrategy:
  {{- toYaml .Values.workflow.retryStrategy | nindent 2 }}
{{- end }}

{{/*
The klm container of a step, without its args. helm and klm write only under
/tmp (an emptyDir): the root filesystem is read-only. HOME and helm's
directories point there by the image's own environment (image/Containerfile),
not repeated here: Argo stores the template in every workflow, twice, and
each container's bytes count against how many waves one workflow carries.

What every step needs reaches it here, once, as the KLM_* variables klm's
flags read (`klm <subcommand> --help` names them): the release, the run (the
workflow's name), the chart, the timeouts and the log format. A flag given
in a step's args still wins.
Arguments: dict root, verificationPod (bool: pass the verification pod),
run (bool, default true: set KLM_RUN_ID to this workflow; false for the steps
that find or name their run themselves), mounts (bool, default true: false
in a containerSet, which mounts them for all its containers).
*/}}
{{- define "klm.container" -}}
{{- $root := .root -}}
image: {{ include "klm.image" $root }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
command:
  - klm
env:
  {{- include "klm.env" . | nindent 2 }}
  {{- if .verificationPod }}
  - name: KLM_VERIFICATION_POD_BASE64
    value: {{`"{{workflow.parameters.verification-pod}}"`}}
  {{- with $root.Values.verificationPods }}
  - name: KLM_POOL_VERIFICATION_PODS_BASE64
    value: {{ toYaml . | b64enc | quote }}
  {{- end }}
  {{- end }}
resources:
  {{- toYaml $root.Values.resources | nindent 2 }}
securityContext:
  {{- toYaml $root.Values.securityContext | nindent 2 }}
{{- if (ternary true .mounts (kindIs "invalid" .mounts)) }}
{{ include "klm.volumeMounts" $root }}
{{- end }}
{{- end }}

{{/*
The mounts of klm's containers: /tmp, and the Prometheus secret of a metric
gate. A containerSet gives them once, for all its containers (Argo adds to a
containerSet's pod only the volumes its own volumeMounts name).
*/}}
{{- define "klm.volumeMounts" -}}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- if .Values.prometheus.secretName }}
  - name: prometheus
    mountPath: /etc/klm/prometheus
    readOnly: true
  {{- end }}
{{- end }}

{{/*
The KLM_* variables of every step (see klm.container).
Arguments: dict root, run (bool, default true).
*/}}
{{- define "klm.env" -}}
{{- $root := .root -}}
- name: KLM_HELM_RELEASE
  value: {{`"{{workflow.parameters.helm-release}}"`}}
- name: KLM_HELM_NAMESPACE
  value: {{`"{{workflow.parameters.helm-namespace}}"`}}
{{- if (ternary true .run (kindIs "invalid" .run)) }}
- name: KLM_RUN_ID
  value: {{`"{{workflow.name}}"`}}
{{- end }}
- name: KLM_LOG_FORMAT
  value: {{ $root.Values.workflow.logFormat | quote }}
- name: KLM_CHART
  value: {{ $root.Values.kataDeploy.chart | quote }}
- name: KLM_HELM_TIMEOUT
  value: {{`"{{workflow.parameters.helm-timeout}}"`}}
- name: KLM_RESTART_TIMEOUT
  value: {{`"{{workflow.parameters.restart-timeout}}"`}}
- name: KLM_DRAIN_TIMEOUT
  value: {{`"{{workflow.parameters.drain-timeout}}"`}}
- name: KLM_DRAIN_SCOPE
  value: {{`"{{workflow.parameters.drain-scope}}"`}}
- name: KLM_VERIFICATION_NAMESPACE
  value: {{`"{{workflow.parameters.verification-namespace}}"`}}
{{- with $root.Values.prometheus }}
{{- if and .secretName .tokenKey }}
- name: KLM_PROMETHEUS_TOKEN_FILE
  value: /etc/klm/prometheus/{{ .tokenKey }}
{{- end }}
{{- if and .secretName .caKey }}
- name: KLM_PROMETHEUS_CA_FILE
  value: /etc/klm/prometheus/{{ .caKey }}
{{- end }}
{{- end }}
- name: KLM_VERIFICATION_TIMEOUT
  value: {{`"{{workflow.parameters.verification-timeout}}"`}}
- name: KLM_STEP_DEADLINE
  value: {{ $root.Values.workflow.stepDeadlineSeconds | toString | quote }}
{{- end }}

{{/* Flags of the node selection. */}}
{{- define "klm.selectionArgs" -}}
- {{`--node-selector={{workflow.parameters.node-selector}}`}}
- {{`--node-taint-key={{workflow.parameters.node-taint-key}}`}}
- {{`--node-taint-value={{workflow.parameters.node-taint-value}}`}}
{{- end }}

{{/* The labels every custom metric carries: the release and the target. */}}
{{- define "klm.metricLabels" -}}
- key: release
  value: {{`"{{workflow.parameters.helm-namespace}}/{{workflow.parameters.helm-release}}"`}}
- key: target_version
  value: {{`"{{workflow.parameters.target-version}}"`}}
{{- end }}

{{/*
klm settle's args, for a wave's index: its pod's last phase (status
Succeeded) and the settle step after a failed upgrade (the upgrade's status).
Arguments: dict root, status.
*/}}
{{- define "klm.settleArgs" -}}
- settle
- {{`--wave={{inputs.parameters.index}}`}}
- --upgrade-status={{ .status }}
- {{`--recycle-old-sandboxes={{workflow.parameters.recycle-old-sandboxes}}`}}
{{- if .root.Values.workflow.metrics }}
- --counts-dir=/tmp/settled
{{- end }}
{{- end }}

{{/*
The node counts a settling step writes (--counts-dir=/tmp/settled), as
outputs, and Argo's counters of them (a failed step still reports them).
Used with workflow.metrics only.
*/}}
{{- define "klm.settledMetrics" -}}
outputs:
  parameters:
    {{- range list "completed" "rolled-back" "failed" }}
    - name: {{ . }}
      valueFrom:
        path: /tmp/settled/{{ . }}
        default: "0"
    {{- end }}
metrics:
  prometheus:
    {{- range list "completed" "rolled-back" "failed" }}
    - name: kata_lifecycle_manager_nodes_total
      help: "Nodes the upgrade completed, rolled back, or left failed (cordoned, for a person)."
      labels:
        {{- include "klm.metricLabels" $ | nindent 8 }}
        - key: result
          value: {{ . | quote }}
      counter:
        value: {{ printf "{{outputs.parameters.%s}}" . | quote }}
    {{- end }}
{{- end }}
