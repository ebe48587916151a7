{{/* Names: every object is named after the release, so one endpoint (or color) is one set of objects. */}}
{{- define "bud-runtime.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{- define "bud-runtime.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{- define "bud-runtime.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bud-runtime.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bud-runtime.labels" -}}
{{ include "bud-runtime.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: inference
app.kubernetes.io/part-of: bud-foundry
bud.ai/release: {{ .Release.Name }}
bud.ai/runtime: {{ .Values.runtime }}
{{- with .Values.endpointId }}
bud.ai/endpoint-id: {{ . | quote }}
{{- end }}
{{- range $key, $value := .Values.labels }}
{{ $key }}: {{ $value | quote }}
{{- end }}
{{- end }}

{{- define "bud-runtime.servedModelName" -}}
{{- default .Release.Name .Values.servedModelName -}}
{{- end }}

{{/* What the server loads: the cached copy when the model comes from S3, else model.path as given. */}}
{{- define "bud-runtime.modelPath" -}}
{{- if .Values.model.s3.enabled -}}
/models/{{ .Values.model.id }}
{{- else -}}
{{- required "model.path is required when model.s3.enabled is false" .Values.model.path -}}
{{- end -}}
{{- end }}

{{- define "bud-runtime.image" -}}
{{- $image := index .Values.images .Values.runtime -}}
{{- printf "%s:%s" $image.repository $image.tag -}}
{{- end }}

{{/* Resources per replica; cpu/memory default to 4 cores and 32 GiB per GPU. Numbers arrive as float64. */}}
{{- define "bud-runtime.cpu" -}}
{{- $cores := .Values.resources.cpuCores | default (mul 4 (int .Values.resources.gpuCount)) -}}
{{- printf "%dm" (int (mulf $cores 1000)) -}}
{{- end }}

{{- define "bud-runtime.memoryMi" -}}
{{- $gb := .Values.resources.memoryGb | default (mul 32 (int .Values.resources.gpuCount)) -}}
{{- int (mulf $gb 1024) -}}
{{- end }}

{{- define "bud-runtime.shmSize" -}}
{{- if .Values.shm.sizeLimit -}}
{{- .Values.shm.sizeLimit -}}
{{- else -}}
{{- printf "%dMi" (div (int (include "bud-runtime.memoryMi" .)) 2) -}}
{{- end -}}
{{- end }}

{{- define "bud-runtime.cacheClaim" -}}
{{- default (printf "%s-model-cache" (include "bud-runtime.fullname" .)) .Values.model.cache.existingClaim -}}
{{- end }}

{{- define "bud-runtime.s3Secret" -}}
{{- default (printf "%s-s3" (include "bud-runtime.fullname" .)) .Values.model.s3.credentials.existingSecret -}}
{{- end }}

{{/* Whether the pods read S3 keys from a Secret (an existing one, or the one this chart creates). */}}
{{- define "bud-runtime.s3HasCredentials" -}}
{{- if or .Values.model.s3.credentials.existingSecret .Values.model.s3.credentials.accessKeyId -}}true{{- end -}}
{{- end }}

{{/*
The server's arguments (after the entrypoint above). The engine parameters have a different spelling in each runtime; integers go through
`int` because Helm reads numbers as float64 (1000000 would otherwise print as 1e+06).
*/}}
{{- define "bud-runtime.entrypoint" -}}
{{- if eq .Values.runtime "vllm" -}}
["vllm", "serve"]
{{- else if eq .Values.runtime "sglang" -}}
["python3", "-m", "sglang.launch_server"]
{{- else -}}
["trtllm-serve", "serve"]
{{- end -}}
{{- end }}

{{- define "bud-runtime.args" -}}
{{- $e := .Values.engine -}}
{{- $model := include "bud-runtime.modelPath" . -}}
{{- $name := include "bud-runtime.servedModelName" . -}}
{{- $port := toString (int .Values.service.port) -}}
{{- $args := list -}}
{{- if eq .Values.runtime "vllm" -}}
{{- $args = list $model "--host" "0.0.0.0" "--port" $port "--served-model-name" $name
      "--tensor-parallel-size" (toString (int $e.tensorParallelSize))
      "--pipeline-parallel-size" (toString (int $e.pipelineParallelSize))
      "--max-num-seqs" (toString (int $e.maxNumSeqs))
      "--gpu-memory-utilization" (toString $e.gpuMemoryUtilization) -}}
{{- if $e.maxModelLen }}{{ $args = concat $args (list "--max-model-len" (toString (int64 $e.maxModelLen))) }}{{ end -}}
{{- if $e.maxNumBatchedTokens }}{{ $args = concat $args (list "--max-num-batched-tokens" (toString (int64 $e.maxNumBatchedTokens))) }}{{ end -}}
{{- else if eq .Values.runtime "sglang" -}}
{{- $args = list "--model-path" $model "--host" "0.0.0.0" "--port" $port
      "--served-model-name" $name
      "--tp-size" (toString (int $e.tensorParallelSize))
      "--pp-size" (toString (int $e.pipelineParallelSize))
      "--max-running-requests" (toString (int $e.maxNumSeqs))
      "--mem-fraction-static" (toString $e.gpuMemoryUtilization) -}}
{{- if $e.maxModelLen }}{{ $args = concat $args (list "--context-length" (toString (int64 $e.maxModelLen))) }}{{ end -}}
{{- if $e.maxNumBatchedTokens }}{{ $args = concat $args (list "--chunked-prefill-size" (toString (int64 $e.maxNumBatchedTokens))) }}{{ end -}}
{{- else -}}
{{- $args = list $model "--host" "0.0.0.0" "--port" $port "--served_model_name" $name
      "--backend" "pytorch"
      "--tp_size" (toString (int $e.tensorParallelSize))
      "--pp_size" (toString (int $e.pipelineParallelSize))
      "--max_batch_size" (toString (int $e.maxNumSeqs))
      "--kv_cache_free_gpu_memory_fraction" (toString $e.gpuMemoryUtilization) -}}
{{- if $e.maxModelLen }}{{ $args = concat $args (list "--max_seq_len" (toString (int64 $e.maxModelLen))) }}{{ end -}}
{{- if $e.maxNumBatchedTokens }}{{ $args = concat $args (list "--max_num_tokens" (toString (int64 $e.maxNumBatchedTokens))) }}{{ end -}}
{{- end -}}
{{- concat $args $e.extraArgs | toJson -}}
{{- end }}

{{/* Settings the schema cannot express across fields. */}}
{{- define "bud-runtime.validate" -}}
{{- $gpus := mul (int .Values.engine.tensorParallelSize) (int .Values.engine.pipelineParallelSize) -}}
{{- if gt $gpus (int .Values.resources.gpuCount) -}}
{{- fail (printf "engine.tensorParallelSize x engine.pipelineParallelSize = %d GPUs, but resources.gpuCount is %d" $gpus (int .Values.resources.gpuCount)) -}}
{{- end -}}
{{- if and .Values.model.s3.enabled (not .Values.model.s3.bucket) -}}
{{- fail "model.s3.bucket is required when model.s3.enabled is true" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.queueDepth.enabled) -}}
{{- fail "autoscaling needs a metric: set autoscaling.targetCPUUtilizationPercentage or enable autoscaling.queueDepth" -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) -}}
{{- fail "ingress.host is required when ingress.enabled is true" -}}
{{- end -}}
{{- end }}
