variable "project_id" {
  description = "Google Cloud project of the GKE cluster."
  type        = string
}

variable "location" {
  description = "Region (or zone) of the GKE cluster the node pools join."
  type        = string
}

variable "cluster_name" {
  description = "Name of the existing GKE Standard cluster that runs Kubeflow Pipelines and KServe."
  type        = string
}

variable "node_service_account" {
  description = "Email of the least-privileged service account the nodes run as (not the Compute Engine default)."
  type        = string
}

variable "gpu_node_locations" {
  description = "Zones of the GPU pools: zones of the cluster's region where the accelerator is offered."
  type        = list(string)
}

variable "gpu_machine_type" {
  description = "Machine type of the GPU nodes; it must carry gpu_accelerator_type."
  type        = string
  default     = "a2-highgpu-1g"
}

variable "gpu_accelerator_type" {
  description = "Accelerator of the GPU nodes (an A100 partitions with MIG)."
  type        = string
  default     = "nvidia-tesla-a100"
}

variable "gpu_accelerator_count" {
  description = "GPUs per GPU node."
  type        = number
  default     = 1
}

variable "gpu_max_nodes" {
  description = "Most nodes per zone of the on-demand GPU pool (it scales down to none when idle)."
  type        = number
  default     = 2
}

variable "spot_gpu_max_nodes" {
  description = "Most nodes per zone of the spot GPU pool (it scales down to none when idle)."
  type        = number
  default     = 4
}

variable "mig_config" {
  description = "MIG layout of every GPU in the GPU pools: a config of manifests/gpu-operator/mig-parted-config.yaml, applied by the GPU operator's MIG manager from the node label nvidia.com/mig.config."
  type        = string
  default     = "all-disabled"

  validation {
    condition     = contains(["all-disabled", "all-1g.5gb", "all-2g.10gb", "all-3g.20gb"], var.mig_config)
    error_message = "mig_config must be a config of manifests/gpu-operator/mig-parted-config.yaml: all-disabled, all-1g.5gb, all-2g.10gb or all-3g.20gb."
  }
}

variable "cpu_machine_type" {
  description = "Machine type of the CPU pool (every pipeline step but training, and the predictors)."
  type        = string
  default     = "e2-standard-8"
}

variable "cpu_min_nodes" {
  description = "Fewest nodes per zone of the CPU pool."
  type        = number
  default     = 1
}

variable "cpu_max_nodes" {
  description = "Most nodes per zone of the CPU pool."
  type        = number
  default     = 6
}
