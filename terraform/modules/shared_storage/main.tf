locals {
  fsx = var.storage_type == "fsx_lustre"
  efs = var.storage_type == "efs"

  fsx_persistent = local.fsx && var.fsx_deployment_type != "SCRATCH_2"
  # Aggregate throughput of the Lustre file system in MB/s (SCRATCH_2 gives 200 MB/s per TiB).
  fsx_throughput_mbps = floor(var.fsx_storage_capacity_gib / 1024 * (local.fsx_persistent ? var.fsx_throughput_per_tib : 200))
}

################################################################################
# FSx for Lustre
################################################################################

resource "aws_fsx_lustre_file_system" "this" {
  count = local.fsx ? 1 : 0

  storage_capacity            = var.fsx_storage_capacity_gib
  subnet_ids                  = [var.subnet_ids[0]]
  security_group_ids          = var.security_group_ids
  deployment_type             = var.fsx_deployment_type
  per_unit_storage_throughput = local.fsx_persistent ? var.fsx_throughput_per_tib : null
  kms_key_id                  = local.fsx_persistent ? var.kms_key_arn : null
  file_system_type_version    = "2.15"
  data_compression_type       = "LZ4"
  copy_tags_to_backups        = true

  tags = merge(var.tags, { Name = "${var.name}-models", "llmfleet:role" = "shared_storage" })
}

resource "aws_fsx_data_repository_association" "models" {
  count = local.fsx && var.data_repository_path != null ? 1 : 0

  file_system_id                   = aws_fsx_lustre_file_system.this[0].id
  data_repository_path             = var.data_repository_path
  file_system_path                 = var.data_repository_file_system_path
  batch_import_meta_data_on_create = true

  s3 {
    auto_import_policy {
      events = ["NEW", "CHANGED", "DELETED"]
    }
  }

  tags = var.tags
}

################################################################################
# EFS
################################################################################

resource "aws_efs_file_system" "this" {
  count = local.efs ? 1 : 0

  creation_token                  = "${var.name}-models"
  encrypted                       = true
  kms_key_id                      = var.kms_key_arn
  performance_mode                = "generalPurpose"
  throughput_mode                 = var.efs_throughput_mode
  provisioned_throughput_in_mibps = var.efs_throughput_mode == "provisioned" ? var.efs_provisioned_throughput_mibps : null

  tags = merge(var.tags, { Name = "${var.name}-models", "llmfleet:role" = "shared_storage" })
}

resource "aws_efs_backup_policy" "this" {
  count = local.efs ? 1 : 0

  file_system_id = aws_efs_file_system.this[0].id

  backup_policy {
    status = "ENABLED"
  }
}

resource "aws_efs_mount_target" "this" {
  count = local.efs ? length(var.subnet_ids) : 0

  file_system_id  = aws_efs_file_system.this[0].id
  subnet_id       = var.subnet_ids[count.index]
  security_groups = var.security_group_ids
}
