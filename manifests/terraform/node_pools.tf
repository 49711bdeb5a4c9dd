# The node pools the compiled pipelines expect (pipelines/placement.py):
#   cpu       every step but training, and the KServe predictors: no taint, so it takes any pod;
#   gpu       the train step: labelled nvidia.com/gpu.present=true (GpuPlacement's node selector)
#             and tainted nvidia.com/gpu (its toleration), so nothing else lands on a GPU;
#   gpu-spot  the same on Spot VMs for `ctloop compile --spot gke`: GKE labels spot nodes
#             cloud.google.com/gke-spot=true itself, and the taint GKE's docs give for spot pools
#             keeps pods that did not ask for spot (and cannot survive a preemption) off it.
# Both GPU pools scale to zero when no train step runs.
#
# The GPU stack is the NVIDIA GPU operator's (manifests/gpu-operator/): GKE installs no driver
# and runs no device plugin on these nodes (gke-no-default-nvidia-gpu-device-plugin), Google's
# driver installer DaemonSet installs the driver on Container-Optimized OS, and the operator's
# device plugin and MIG manager take the rest, partitioning each GPU as nvidia.com/mig.config
# names.
locals {
  gpu_taints = [{ key = "nvidia.com/gpu", value = "present", effect = "NO_SCHEDULE" }]
  spot_taints = [
    { key = "nvidia.com/gpu", value = "present", effect = "NO_SCHEDULE" },
    { key = "cloud.google.com/gke-spot", value = "true", effect = "NO_SCHEDULE" },
  ]

  pools = {
    cpu = {
      machine_type      = var.cpu_machine_type
      accelerator_count = 0
      spot              = false
      min_nodes         = var.cpu_min_nodes
      max_nodes         = var.cpu_max_nodes
      node_locations    = null
      disk_size_gb      = 100
      labels            = {}
      taints            = []
    }
    gpu = {
      machine_type      = var.gpu_machine_type
      accelerator_count = var.gpu_accelerator_count
      spot              = false
      min_nodes         = 0
      max_nodes         = var.gpu_max_nodes
      node_locations    = var.gpu_node_locations
      disk_size_gb      = 200
      labels = {
        "nvidia.com/gpu.present"                  = "true"
        "nvidia.com/mig.config"                   = var.mig_config
        "gke-no-default-nvidia-gpu-device-plugin" = "true"
      }
      taints = local.gpu_taints
    }
    gpu-spot = {
      machine_type      = var.gpu_machine_type
      accelerator_count = var.gpu_accelerator_count
      spot              = true
      min_nodes         = 0
      max_nodes         = var.spot_gpu_max_nodes
      node_locations    = var.gpu_node_locations
      disk_size_gb      = 200
      labels = {
        "nvidia.com/gpu.present"                  = "true"
        "nvidia.com/mig.config"                   = var.mig_config
        "gke-no-default-nvidia-gpu-device-plugin" = "true"
      }
      taints = local.spot_taints
    }
  }
}

resource "google_container_node_pool" "pool" {
  for_each = local.pools

  name           = each.key
  cluster        = var.cluster_name
  location       = var.location
  node_locations = each.value.node_locations

  autoscaling {
    min_node_count = each.value.min_nodes
    max_node_count = each.value.max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  # A GPU node is replaced by a new one before it is drained: a running train step is not
  # left without a node to restart on.
  upgrade_settings {
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type    = each.value.machine_type
    spot            = each.value.spot
    image_type      = "COS_CONTAINERD"
    disk_type       = "pd-balanced"
    disk_size_gb    = each.value.disk_size_gb
    service_account = var.node_service_account
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = each.value.labels

    metadata = {
      disable-legacy-endpoints = "true"
    }

    dynamic "taint" {
      for_each = each.value.taints
      content {
        key    = taint.value.key
        value  = taint.value.value
        effect = taint.value.effect
      }
    }

    dynamic "guest_accelerator" {
      for_each = each.value.accelerator_count > 0 ? [each.value.accelerator_count] : []
      content {
        type  = var.gpu_accelerator_type
        count = guest_accelerator.value
        gpu_driver_installation_config {
          gpu_driver_version = "INSTALLATION_DISABLED"
        }
      }
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}
