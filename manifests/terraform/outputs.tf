output "node_pools" {
  description = "Name of each node pool, by role (cpu, gpu, gpu-spot)."
  value       = { for role, pool in google_container_node_pool.pool : role => pool.name }
}
