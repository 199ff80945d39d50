output "mount" {
  description = "Mount facts Ansible needs: type (fsx_lustre or efs), file_system_id, dns_name, mount_name (Lustre only), mount_point, the linked S3 path (or null) and its directory on the file system, and throughput_mbps (null for elastic EFS)."
  value = local.fsx ? {
    type                 = "fsx_lustre"
    file_system_id       = aws_fsx_lustre_file_system.this[0].id
    dns_name             = aws_fsx_lustre_file_system.this[0].dns_name
    mount_name           = aws_fsx_lustre_file_system.this[0].mount_name
    mount_point          = var.mount_point
    data_repository_path = var.data_repository_path
    models_path          = var.data_repository_path != null ? "${var.mount_point}${var.data_repository_file_system_path}" : var.mount_point
    throughput_mbps      = local.fsx_throughput_mbps
    } : {
    type                 = "efs"
    file_system_id       = aws_efs_file_system.this[0].id
    dns_name             = aws_efs_file_system.this[0].dns_name
    mount_name           = null
    mount_point          = var.mount_point
    data_repository_path = null
    models_path          = var.mount_point
    throughput_mbps      = var.efs_throughput_mode == "provisioned" ? var.efs_provisioned_throughput_mibps : null
  }
}
