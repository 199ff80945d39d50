output "nodes" {
  description = "One object per node: name, id, private_ip, availability_zone, instance_type, the GPU facts (gpu, gpu_count, gpu_memory_mib) and the staging mount. The inventory handoff reads this."
  value = [for i, n in aws_instance.node : {
    name              = n.tags["Name"]
    id                = n.id
    private_ip        = n.private_ip
    availability_zone = n.availability_zone
    instance_type     = var.instance_type
    pool              = var.name
    gpu               = local.gpu.gpu
    gpu_count         = local.gpu.gpu_count
    gpu_memory_mib    = local.gpu.gpu_memory_mib
    ssh_user          = var.ssh_user
    staging_path      = local.staging ? var.staging_path : null
  }]
}

output "gpu" {
  description = "GPU facts of the pool's instance type, from the generated table: gpu, gpu_count, gpu_memory_mib, interconnect, vcpus, memory_gib, instance_store_gib."
  value       = local.gpu
}

output "launch_template_id" {
  description = "ID of the pool's launch template."
  value       = aws_launch_template.this.id
}

output "iam_role_name" {
  description = "Name of the nodes' IAM role (attach extra policies to it)."
  value       = aws_iam_role.node.name
}

output "placement_group_name" {
  description = "Name of the pool's placement group, or null when placement_strategy is null."
  value       = try(aws_placement_group.this[0].name, null)
}
